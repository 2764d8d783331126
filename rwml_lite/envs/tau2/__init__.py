"""tau2-bench re-implemented over upstream's data files: customer-service domains whose agent talks
to a simulated user and calls tools against a database; success = the database ends as the
reference solution leaves it (and the required facts were told to the user)."""
