"""tau2 retail: products, users and orders (upstream's db.json), and the 16 agent tools.

Written from the data and policy.md. Status transitions: pending -> cancelled, pending -> pending
(item modified) (after which the order can no longer change), delivered -> return requested or
exchange requested. Gift cards are charged and refunded at once; other methods are recorded in the
order's payment history. Every tool checks all its inputs before it writes anything.
"""

from __future__ import annotations

from collections import Counter

from rwml_lite.envs.tau2.toolkit import READ, WRITE, ServiceTools, ToolError, money, tool

CANCEL_REASONS = ("no longer needed", "ordered by mistake")
ITEMS_MODIFIED = "pending (item modified)"


class RetailTools(ServiceTools):
    # ------------------------------------------------------------------ lookups

    def _order(self, order_id: str, status: str | None = None) -> dict:
        order = self.db["orders"].get(order_id)
        if order is None:
            raise ToolError(f"order {order_id} not found")
        if status and order["status"] != status:
            raise ToolError(f"order {order_id} is {order['status']}, not {status}")
        return order

    def _variant(self, item_id: str) -> tuple[dict, dict]:
        for product in self.db["products"].values():
            if item_id in product["variants"]:
                return product, product["variants"][item_id]
        raise ToolError(f"item {item_id} not found")

    def _method(self, user: dict, payment_method_id: str) -> dict:
        method = user["payment_methods"].get(payment_method_id)
        if method is None:
            raise ToolError(f"payment method {payment_method_id} is not in the user's profile")
        return method

    def _swap(self, order: dict, item_ids: list, new_item_ids: list) -> tuple[list[dict], float]:
        """The order's items with item_ids replaced by new_item_ids (same product, other available
        option), and the price difference new - old."""
        if not item_ids or len(item_ids) != len(new_item_ids):
            raise ToolError("item_ids and new_item_ids must be non-empty lists of the same length")
        have = Counter(i["item_id"] for i in order["items"])
        if Counter(item_ids) - have:
            raise ToolError(
                f"order {order['order_id']} does not hold item(s) {', '.join(sorted(Counter(item_ids) - have))}"
            )
        items, difference = [dict(i) for i in order["items"]], 0.0
        for old, new in zip(item_ids, new_item_ids):
            product, variant = self._variant(new)
            slot = next(i for i in items if i["item_id"] == old and not i.get("_swapped"))
            if product["product_id"] != slot["product_id"]:
                raise ToolError(
                    f"item {new} is a {product['name']}, not a {slot['name']}: only options of the same product can be swapped"
                )
            if new == old:
                raise ToolError(f"item {new} is the item already ordered")
            if not variant["available"]:
                raise ToolError(f"item {new} is not available")
            difference += variant["price"] - slot["price"]
            slot.update(item_id=new, price=variant["price"], options=variant["options"], _swapped=True)
        for item in items:
            item.pop("_swapped", None)
        return items, money(difference)

    def _check_pays(self, method: dict, amount: float) -> None:
        if method["source"] == "gift_card" and amount > method["balance"] + 1e-9:
            raise ToolError(f"gift card {method['id']} holds {method['balance']}, less than {amount}")

    # ------------------------------------------------------------------ read tools

    @tool(READ)
    def find_user_id_by_email(self, email: str) -> str:
        """Find a user's id by their email address.

        email: e.g. "something@example.com".
        """
        for user in self.db["users"].values():
            if user["email"].lower() == email.lower():
                return user["user_id"]
        raise ToolError(f"no user with email {email}")

    @tool(READ)
    def find_user_id_by_name_zip(self, first_name: str, last_name: str, zip: str) -> str:
        """Find a user's id by first name, last name and zip code of their address.

        first_name, last_name: e.g. "John", "Doe". zip: e.g. "12345".
        """
        for user in self.db["users"].values():
            name = user["name"]
            if (name["first_name"].lower(), name["last_name"].lower(), user["address"]["zip"]) == (
                first_name.lower(),
                last_name.lower(),
                zip,
            ):
                return user["user_id"]
        raise ToolError(f"no user named {first_name} {last_name} with zip {zip}")

    @tool(READ)
    def get_user_details(self, user_id: str) -> dict:
        """Get a user's profile: name, address, email, payment methods, orders.

        user_id: e.g. "sara_doe_496".
        """
        return self._user(user_id)

    @tool(READ)
    def get_order_details(self, order_id: str) -> dict:
        """Get an order: items, status, address, fulfillments, payment history.

        order_id: e.g. "#W0000000" (with the leading #).
        """
        return self._order(order_id)

    @tool(READ)
    def get_product_details(self, product_id: str) -> dict:
        """Get a product type and all its variant items with options, availability and price.

        product_id: e.g. "6086499569" (not an item id).
        """
        if product_id not in self.db["products"]:
            raise ToolError(f"product {product_id} not found")
        return self.db["products"][product_id]

    @tool(READ)
    def get_item_details(self, item_id: str) -> dict:
        """Get one variant item: its product, options, availability and price.

        item_id: e.g. "1008292230" (not a product id).
        """
        product, variant = self._variant(item_id)
        return {"product_id": product["product_id"], "name": product["name"], **variant}

    @tool(READ)
    def list_all_product_types(self) -> dict:
        """List the names of the 50 product types with their product ids."""
        return dict(sorted((p["name"], p["product_id"]) for p in self.db["products"].values()))

    # ------------------------------------------------------------------ write tools

    @tool(WRITE)
    def cancel_pending_order(self, order_id: str, reason: str) -> dict:
        """Cancel a pending order; its payments are refunded (gift cards at once, others in 5-7 business days).

        reason: "no longer needed" or "ordered by mistake".
        """
        order = self._order(order_id, "pending")
        if reason not in CANCEL_REASONS:
            raise ToolError(f"reason must be one of {', '.join(repr(r) for r in CANCEL_REASONS)}, not {reason!r}")
        user = self._user(order["user_id"])
        refunds = [
            {"transaction_type": "refund", "amount": p["amount"], "payment_method_id": p["payment_method_id"]}
            for p in order["payment_history"]
            if p["transaction_type"] == "payment"
        ]
        for refund in refunds:
            method = user["payment_methods"].get(refund["payment_method_id"])
            if method and method["source"] == "gift_card":
                method["balance"] = money(method["balance"] + refund["amount"])
        order["payment_history"].extend(refunds)
        order["status"], order["cancel_reason"] = "cancelled", reason
        return order

    @tool(WRITE)
    def modify_pending_order_address(
        self, order_id: str, address1: str, address2: str, city: str, state: str, country: str, zip: str
    ) -> dict:
        """Change the shipping address of a pending order.

        address1, address2 (may be empty), city, state, country, zip: the new address.
        """
        order = self._order(order_id, "pending")
        order["address"] = _address(address1, address2, city, state, country, zip)
        return order

    @tool(WRITE)
    def modify_pending_order_payment(self, order_id: str, payment_method_id: str) -> dict:
        """Pay a pending order with another single payment method from the profile; the original one is
        refunded (a gift card at once). A gift card must cover the whole total.

        payment_method_id: e.g. "gift_card_0000000" or "credit_card_0000000".
        """
        order = self._order(order_id, "pending")
        user = self._user(order["user_id"])
        payments = [p for p in order["payment_history"] if p["transaction_type"] == "payment"]
        if len(payments) != 1:
            raise ToolError(
                f"order {order_id} was paid with {len(payments)} payments; only a single payment can be moved"
            )
        original = payments[0]
        if payment_method_id == original["payment_method_id"]:
            raise ToolError("the new payment method must differ from the original one")
        method = self._method(user, payment_method_id)
        self._check_pays(method, original["amount"])
        amount = original["amount"]
        order["payment_history"] += [
            {"transaction_type": "payment", "amount": amount, "payment_method_id": payment_method_id},
            {"transaction_type": "refund", "amount": amount, "payment_method_id": original["payment_method_id"]},
        ]
        if method["source"] == "gift_card":
            method["balance"] = money(method["balance"] - amount)
        old = user["payment_methods"].get(original["payment_method_id"])
        if old and old["source"] == "gift_card":
            old["balance"] = money(old["balance"] + amount)
        return order

    @tool(WRITE)
    def modify_pending_order_items(
        self, order_id: str, item_ids: list[str], new_item_ids: list[str], payment_method_id: str
    ) -> dict:
        """Swap items of a pending order for other options of the same products, all in one call: the order
        then can no longer be modified or cancelled. The price difference is paid or refunded with a payment
        method from the profile.

        item_ids: items of the order to replace. new_item_ids: their replacements, in the same order.
        """
        order = self._order(order_id, "pending")
        user = self._user(order["user_id"])
        items, difference = self._swap(order, item_ids, new_item_ids)
        method = self._method(user, payment_method_id)
        self._check_pays(method, difference)
        if method["source"] == "gift_card":
            method["balance"] = money(method["balance"] - difference)
        if difference:
            kind = "payment" if difference > 0 else "refund"
            order["payment_history"].append(
                {"transaction_type": kind, "amount": abs(difference), "payment_method_id": payment_method_id}
            )
        order["items"], order["status"] = items, ITEMS_MODIFIED
        return order

    @tool(WRITE)
    def return_delivered_order_items(self, order_id: str, item_ids: list[str], payment_method_id: str) -> dict:
        """Request the return of items of a delivered order; the refund goes to the original payment method
        or to a gift card of the user.

        item_ids: the items to return. payment_method_id: the original method or a gift card.
        """
        order = self._order(order_id, "delivered")
        user = self._user(order["user_id"])
        have = Counter(i["item_id"] for i in order["items"])
        if not item_ids or Counter(item_ids) - have:
            raise ToolError(
                f"order {order_id} does not hold item(s) {', '.join(sorted(Counter(item_ids) - have)) or '(none given)'}"
            )
        method = self._method(user, payment_method_id)
        originals = {p["payment_method_id"] for p in order["payment_history"] if p["transaction_type"] == "payment"}
        if payment_method_id not in originals and method["source"] != "gift_card":
            raise ToolError("the refund must go to the original payment method or to a gift card")
        order.update(
            status="return requested", return_items=sorted(item_ids), return_payment_method_id=payment_method_id
        )
        return order

    @tool(WRITE)
    def exchange_delivered_order_items(
        self, order_id: str, item_ids: list[str], new_item_ids: list[str], payment_method_id: str
    ) -> dict:
        """Request the exchange of items of a delivered order for other options of the same products, all in
        one call. The price difference is settled with a payment method from the profile when the items return.

        item_ids: items to exchange. new_item_ids: their replacements, in the same order.
        """
        order = self._order(order_id, "delivered")
        user = self._user(order["user_id"])
        _, difference = self._swap(order, item_ids, new_item_ids)
        self._method(user, payment_method_id)
        # No balance check here: the difference is settled when the items come back, and the reference
        # solution of retail task 105 exchanges with a gift card holding less than the difference.
        order.update(
            status="exchange requested", exchange_items=sorted(item_ids), exchange_new_items=sorted(new_item_ids),
            exchange_payment_method_id=payment_method_id, exchange_price_difference=difference,
        )  # fmt: skip
        return order

    @tool(WRITE)
    def modify_user_address(
        self, user_id: str, address1: str, address2: str, city: str, state: str, country: str, zip: str
    ) -> dict:
        """Change the default address of a user.

        address1, address2 (may be empty), city, state, country, zip: the new address.
        """
        user = self._user(user_id)
        user["address"] = _address(address1, address2, city, state, country, zip)
        return user


def _address(address1: str, address2: str, city: str, state: str, country: str, zip: str) -> dict:
    """An address record as the retail database stores it (keys in the database's order)."""
    return {"address1": address1, "address2": address2, "city": city, "country": country, "state": state, "zip": zip}
