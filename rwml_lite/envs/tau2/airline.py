"""tau2 airline: flights, users and reservations (upstream's db.json), and the 14 agent tools.

Written from the data and policy.md. The clock is fixed at 2024-05-15 15:00 EST; new reservation
and certificate ids come from fixed sequences, so replaying the same calls gives the same database.
Every tool checks all its inputs before it writes anything.
"""

from __future__ import annotations

from datetime import date as Date
from datetime import timedelta

from rwml_lite.envs.tau2.toolkit import READ, WRITE, ServiceTools, ToolError, money, tool

NOW = "2024-05-15T15:00:00"
CABINS = ("basic_economy", "economy", "business")
BAG_PRICE, INSURANCE_PRICE = 50, 30
MAX_PAYMENTS = {"certificate": 1, "credit_card": 1, "gift_card": 3}


class AirlineTools(ServiceTools):
    # ------------------------------------------------------------------ lookups

    def _reservation(self, reservation_id: str) -> dict:
        if reservation_id not in self.db["reservations"]:
            raise ToolError(f"reservation {reservation_id} not found")
        return self.db["reservations"][reservation_id]

    def _flight_day(self, flight_number: str, date: str) -> tuple[dict, dict]:
        flight = self.db["flights"].get(flight_number)
        if flight is None:
            raise ToolError(f"flight {flight_number} not found")
        if date not in flight["dates"]:
            raise ToolError(f"flight {flight_number} does not fly on {date}")
        return flight, flight["dates"][date]

    def _payment(self, user: dict, payment_id: str, allowed: tuple[str, ...]) -> dict:
        method = user["payment_methods"].get(payment_id)
        if method is None:
            raise ToolError(f"payment method {payment_id} is not in the user's profile")
        if method["source"] not in allowed:
            raise ToolError(
                f"payment method {payment_id} is a {method['source']}; this change takes {' or '.join(allowed)}"
            )
        return method

    # ------------------------------------------------------------------ read tools

    @tool(READ)
    def get_user_details(self, user_id: str) -> dict:
        """Get the details of a user: name, contact, payment methods, membership, saved passengers, reservations.

        user_id: e.g. "sara_doe_496".
        """
        return self._user(user_id)

    @tool(READ)
    def get_reservation_details(self, reservation_id: str) -> dict:
        """Get the details of a reservation: flights, passengers, cabin, payments, baggage, insurance.

        reservation_id: e.g. "ZFA04Y".
        """
        return self._reservation(reservation_id)

    @tool(READ)
    def list_all_airports(self) -> list:
        """List the IATA codes of every airport the airline flies from or to."""
        return sorted(
            {f["origin"] for f in self.db["flights"].values()} | {f["destination"] for f in self.db["flights"].values()}
        )

    def _available(self, flight: dict, date: str) -> dict | None:
        day = flight["dates"].get(date)
        if not day or day["status"] != "available":
            return None
        keep = ("flight_number", "origin", "destination", "scheduled_departure_time_est", "scheduled_arrival_time_est")
        return {
            **{k: flight[k] for k in keep},
            "date": date,
            "status": "available",
            "available_seats": day["available_seats"],
            "prices": day["prices"],
        }

    @tool(READ)
    def search_direct_flight(self, origin: str, destination: str, date: str) -> list:
        """Search the direct flights between two airports on a date that can still be booked.

        origin: IATA code, e.g. "JFK". destination: IATA code. date: "YYYY-MM-DD".
        """
        found = (
            self._available(f, date)
            for f in self.db["flights"].values()
            if f["origin"] == origin and f["destination"] == destination
        )
        return [f for f in found if f]

    @tool(READ)
    def search_onestop_flight(self, origin: str, destination: str, date: str) -> list:
        """Search the one-stop connections between two airports departing on a date: pairs of bookable flights
        where the second leaves the connecting airport after the first arrives.

        origin: IATA code. destination: IATA code. date: "YYYY-MM-DD" of the first flight.
        """
        pairs = []
        for first in self.db["flights"].values():
            leg1 = (
                self._available(first, date)
                if first["origin"] == origin and first["destination"] != destination
                else None
            )
            if not leg1:
                continue
            arrival = first["scheduled_arrival_time_est"]
            next_day = arrival.endswith("+1")
            second_date = (Date.fromisoformat(date) + timedelta(days=next_day)).isoformat()
            for second in self.db["flights"].values():
                if second["origin"] != first["destination"] or second["destination"] != destination:
                    continue
                if not next_day and second["scheduled_departure_time_est"] <= arrival:
                    continue
                leg2 = self._available(second, second_date)
                if leg2:
                    pairs.append([leg1, leg2])
        return pairs

    @tool(READ)
    def get_flight_status(self, flight_number: str, date: str) -> str:
        """Get the status of a flight on a date: available, on time, delayed, flying, landed or cancelled.

        flight_number: e.g. "HAT001". date: "YYYY-MM-DD".
        """
        return self._flight_day(flight_number, date)[1]["status"]

    # ------------------------------------------------------------------ write tools

    def _segments(self, flights: list, cabin: str, passengers: int, keep_prices: dict) -> list[dict]:
        """Priced segments for (flight_number, date) pairs; kept segments keep their old price."""
        if cabin not in CABINS:
            raise ToolError(f"cabin must be one of {', '.join(CABINS)}, not {cabin!r}")
        segments = []
        for leg in flights:
            number, date = leg["flight_number"], leg["date"]
            flight, day = self._flight_day(number, date)
            if (number, date) in keep_prices:
                price = keep_prices[(number, date)]
            else:
                if day["status"] != "available":
                    raise ToolError(f"flight {number} on {date} cannot be booked (status: {day['status']})")
                if day["available_seats"][cabin] < passengers:
                    raise ToolError(
                        f"flight {number} on {date} has {day['available_seats'][cabin]} {cabin} seats left, {passengers} needed"
                    )
                price = day["prices"][cabin]
            segments.append(
                {
                    "flight_number": number,
                    "date": date,
                    "price": price,
                    "origin": flight["origin"],
                    "destination": flight["destination"],
                }
            )
        return segments

    def _move_seats(self, segments: list[dict], cabin: str, passengers: int) -> None:
        """Take (passengers > 0) or give back (< 0) seats on the segments still open for booking."""
        for seg in segments:
            day = self.db["flights"][seg["flight_number"]]["dates"][seg["date"]]
            if day["status"] == "available":
                day["available_seats"][cabin] -= passengers

    def _check_covers(self, method: dict, amount: float) -> None:
        """A gift card or certificate must hold what it pays (credit cards are billed outside)."""
        if method["source"] in ("gift_card", "certificate") and amount > method["amount"] + 1e-9:
            raise ToolError(f"{method['id']} holds {method['amount']}, less than {amount}")

    def _settle(self, reservation: dict, method: dict, amount: float) -> None:
        """Record a checked charge (> 0) or refund (< 0) of a change: gift card balance, payment history."""
        if method["source"] == "gift_card":
            method["amount"] = money(method["amount"] - amount)
        if amount:
            reservation["payment_history"].append({"payment_id": method["id"], "amount": amount})

    @tool(WRITE)
    def book_reservation(
        self,
        user_id: str,
        origin: str,
        destination: str,
        flight_type: str,
        cabin: str,
        flights: list[dict],
        passengers: list[dict],
        payment_methods: list[dict],
        total_baggages: int,
        nonfree_baggages: int,
        insurance: str,
    ) -> dict:
        """Book a reservation. The payments must add up to the total price: the flights' prices in the cabin
        for each passenger, plus 30 per passenger with insurance, plus 50 per non-free bag.

        flight_type: "one_way" or "round_trip". cabin: "basic_economy", "economy" or "business".
        flights: [{"flight_number", "date"}]. passengers: [{"first_name", "last_name", "dob"}], at most 5.
        payment_methods: [{"payment_id", "amount"}] from the user's profile: at most one certificate, one
        credit card and three gift cards. insurance: "yes" or "no".
        """
        user = self._user(user_id)
        if flight_type not in ("one_way", "round_trip"):
            raise ToolError(f"flight_type must be one_way or round_trip, not {flight_type!r}")
        if insurance not in ("yes", "no"):
            raise ToolError(f"insurance must be yes or no, not {insurance!r}")
        if not 1 <= len(passengers) <= 5:
            raise ToolError(f"a reservation holds 1 to 5 passengers, not {len(passengers)}")
        if any(set(p) != {"first_name", "last_name", "dob"} for p in passengers):
            raise ToolError("each passenger needs exactly first_name, last_name and dob")
        if not 0 <= nonfree_baggages <= total_baggages:
            raise ToolError("nonfree_baggages must be between 0 and total_baggages")
        n = len(passengers)
        segments = self._segments(flights, cabin, n, keep_prices={})
        total = money(
            sum(s["price"] for s in segments) * n
            + INSURANCE_PRICE * n * (insurance == "yes")
            + BAG_PRICE * nonfree_baggages
        )
        methods = [
            (self._payment(user, p["payment_id"], tuple(MAX_PAYMENTS)), money(p["amount"])) for p in payment_methods
        ]
        for source, most in MAX_PAYMENTS.items():
            if sum(m["source"] == source for m, _ in methods) > most:
                raise ToolError(f"a reservation takes at most {most} {source.replace('_', ' ')}(s)")
        if money(sum(a for _, a in methods)) != total:
            raise ToolError(
                f"the payments add up to {money(sum(a for _, a in methods))}, but the total price is {total}"
            )
        for method, amount in methods:
            self._check_covers(method, amount)

        for method, amount in methods:  # all checks passed: write
            if method["source"] == "gift_card":
                method["amount"] = money(method["amount"] - amount)
            elif method["source"] == "certificate":  # single use: what is left is not refunded
                del user["payment_methods"][method["id"]]
        self._move_seats(segments, cabin, n)
        reservation_id = next(r for r in _ids("HAT") if r not in self.db["reservations"])
        reservation = {
            "reservation_id": reservation_id, "user_id": user_id, "origin": origin, "destination": destination,
            "flight_type": flight_type, "cabin": cabin, "flights": segments, "passengers": [dict(p) for p in passengers],
            "payment_history": [{"payment_id": m["id"], "amount": a} for m, a in methods], "created_at": NOW,
            "total_baggages": total_baggages, "nonfree_baggages": nonfree_baggages, "insurance": insurance,
        }  # fmt: skip
        self.db["reservations"][reservation_id] = reservation
        user["reservations"].append(reservation_id)
        return reservation

    @tool(WRITE)
    def cancel_reservation(self, reservation_id: str) -> dict:
        """Cancel a whole reservation; every payment is refunded to its original method. The tool does not
        check the cancellation rules of the policy: check them first.

        reservation_id: e.g. "ZFA04Y".
        """
        reservation = self._reservation(reservation_id)
        if reservation.get("status") == "cancelled":
            raise ToolError(f"reservation {reservation_id} is already cancelled")
        refunds = [{"payment_id": p["payment_id"], "amount": -p["amount"]} for p in reservation["payment_history"]]
        self._move_seats(reservation["flights"], reservation["cabin"], -len(reservation["passengers"]))
        reservation["payment_history"].extend(refunds)
        reservation["status"] = "cancelled"
        return reservation

    def _open_reservation(self, reservation_id: str) -> dict:
        reservation = self._reservation(reservation_id)
        if reservation.get("status") == "cancelled":
            raise ToolError(f"reservation {reservation_id} is cancelled")
        return reservation

    @tool(WRITE)
    def update_reservation_flights(self, reservation_id: str, cabin: str, flights: list[dict], payment_id: str) -> dict:
        """Change the flights and/or the cabin of a reservation, passing the whole new list of flights.
        Segments kept in the same cabin keep their price; the difference for all passengers is charged to
        or refunded on one gift card or credit card. The policy's rules are not checked here.

        cabin: the cabin for every flight. flights: [{"flight_number", "date"}]. payment_id: from the profile.
        """
        reservation = self._open_reservation(reservation_id)
        user = self._user(reservation["user_id"])
        n = len(reservation["passengers"])
        kept = (
            {(s["flight_number"], s["date"]): s["price"] for s in reservation["flights"]}
            if cabin == reservation["cabin"]
            else {}
        )
        segments = self._segments(flights, cabin, n, keep_prices=kept)
        difference = money((sum(s["price"] for s in segments) - sum(s["price"] for s in reservation["flights"])) * n)
        method = self._payment(user, payment_id, ("gift_card", "credit_card"))
        self._check_covers(method, difference)

        self._move_seats(reservation["flights"], reservation["cabin"], -n)
        self._move_seats(segments, cabin, n)
        self._settle(reservation, method, difference)
        reservation["flights"], reservation["cabin"] = segments, cabin
        return reservation

    @tool(WRITE)
    def update_reservation_passengers(self, reservation_id: str, passengers: list[dict]) -> dict:
        """Replace the passengers of a reservation; their number cannot change.

        passengers: [{"first_name", "last_name", "dob"}], as many as the reservation has.
        """
        reservation = self._open_reservation(reservation_id)
        if len(passengers) != len(reservation["passengers"]):
            raise ToolError(
                f"the reservation has {len(reservation['passengers'])} passengers; the number cannot change"
            )
        if any(set(p) != {"first_name", "last_name", "dob"} for p in passengers):
            raise ToolError("each passenger needs exactly first_name, last_name and dob")
        reservation["passengers"] = [dict(p) for p in passengers]
        return reservation

    @tool(WRITE)
    def update_reservation_baggages(
        self, reservation_id: str, total_baggages: int, nonfree_baggages: int, payment_id: str
    ) -> dict:
        """Set the checked bags of a reservation (bags can be added, not removed); each added non-free bag
        costs 50, paid with a gift card or credit card from the profile.

        total_baggages: all checked bags. nonfree_baggages: the paid ones among them.
        """
        reservation = self._open_reservation(reservation_id)
        user = self._user(reservation["user_id"])
        if total_baggages < reservation["total_baggages"] or nonfree_baggages < reservation["nonfree_baggages"]:
            raise ToolError("checked bags can be added but not removed")
        if nonfree_baggages > total_baggages:
            raise ToolError("nonfree_baggages cannot exceed total_baggages")
        cost = BAG_PRICE * (nonfree_baggages - reservation["nonfree_baggages"])
        method = self._payment(user, payment_id, ("gift_card", "credit_card"))
        self._check_covers(method, cost)
        self._settle(reservation, method, cost)
        reservation["total_baggages"], reservation["nonfree_baggages"] = total_baggages, nonfree_baggages
        return reservation

    @tool(WRITE)
    def send_certificate(self, user_id: str, amount: int) -> str:
        """Add a travel certificate to a user's profile, as compensation the policy allows.

        amount: in dollars.
        """
        user = self._user(user_id)
        if amount <= 0:
            raise ToolError("the amount must be positive")
        taken = {m for u in self.db["users"].values() for m in u["payment_methods"]}
        certificate_id = next(c for c in (f"certificate_{n}" for n in range(3221322, 10**8)) if c not in taken)
        user["payment_methods"][certificate_id] = {"source": "certificate", "id": certificate_id, "amount": amount}
        return f"Certificate {certificate_id} of {amount} dollars added to user {user_id}."


def _ids(prefix: str):
    """HATHAT, HATHAU, HATHAV, ...: fixed new-reservation ids, so that replays agree."""
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    first = letters.index("H") * 26 * 26 + letters.index("A") * 26 + letters.index("T")
    for n in range(first, 26**3):
        yield prefix + letters[n // 676] + letters[n // 26 % 26] + letters[n % 26]
