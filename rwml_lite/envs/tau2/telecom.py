"""tau2 telecom: the carrier's records (db.toml) behind the agent's 16 tools, and the customer's phone
(user_db.toml) behind the user's own 30 tools, which the simulated user calls when the agent asks.

Written from main_policy.md and tech_support_manual.md. Both sides live in one JSON world, so one
hash and one replay cover them. The phone's connection is computed from its settings whenever it is
read, with two things latched as on a real phone: the line status the phone registered at its last
network search (rebooting, toggling airplane mode, reseating the SIM) — so a resumed line needs a
reboot, as the policy says — and the APN settings, which a reset changes only at the next reboot.

Tasks set their scenario up with `setup` methods (a broken APN, a suspended line, ...) and are
judged by `assertion` methods on the final state (service, mobile data, speed, MMS, bills).
"""

from __future__ import annotations

from rwml_lite.envs.tau2.toolkit import READ, WRITE, ServiceTools, ToolError, Toolkit, assertion, money, setup, tool

TODAY = "2025-02-25"  # main_policy.md: "The current time is 2025-02-25 12:08:00 EST."
MAX_REFUEL_GB = 2.0
NETWORK_MODES = {"4g_5g_preferred": "5G", "4g_only": "4G", "3g_only": "3G", "2g_only": "2G"}
PEAK_MBPS = {"5G": 250.0, "4G": 100.0, "3G": 8.0, "2G": 0.2}  # [ours] at excellent signal
SIGNAL_FACTOR = {"excellent": 1.0, "good": 0.8, "fair": 0.5, "poor": 0.25}
SPEED_WORDS = ((1.0, "very poor"), (5.0, "poor"), (25.0, "fair"), (100.0, "good"))  # below each bound
APPS = ("messaging", "browser")


def customer_with_number(db: dict, phone_number: str) -> dict | None:
    """The customer whose primary number, or one of whose lines' numbers, is phone_number."""
    for customer in db["customers"].values():
        if phone_number == customer["phone_number"] or any(
            db["lines"][lid]["phone_number"] == phone_number for lid in customer["line_ids"]
        ):
            return customer
    return None


def _speed_word(mbps: float) -> str:
    return next((word for bound, word in SPEED_WORDS if mbps < bound), "excellent")


class TelecomTools(ServiceTools):
    """The agent's side: customers, lines, plans, devices and bills."""

    def __init__(self, db: dict):
        super().__init__(db)
        self.phone = PhoneTools(db)

    def side(self, requestor: str) -> Toolkit:
        """The toolkit that acts for `requestor` ("assistant" or "user")."""
        return self.phone if requestor == "user" else self

    # ------------------------------------------------------------------ lookups

    def _customer(self, customer_id: str) -> dict:
        if customer_id not in self.db["customers"]:
            raise ToolError(f"customer {customer_id} not found")
        return self.db["customers"][customer_id]

    def _line(self, customer_id: str, line_id: str) -> dict:
        customer = self._customer(customer_id)
        if line_id not in customer["line_ids"]:
            raise ToolError(f"line {line_id} does not belong to customer {customer_id}")
        return self.db["lines"][line_id]

    def _bill(self, customer_id: str, bill_id: str) -> dict:
        bill = self.db["bills"].get(bill_id)
        if bill is None or bill["customer_id"] != customer_id:
            raise ToolError(f"bill {bill_id} not found for customer {customer_id}")
        return bill

    # ------------------------------------------------------------------ read tools

    @tool(READ)
    def get_customer_by_phone(self, phone_number: str) -> dict:
        """Find a customer by their primary phone number or the number of one of their lines.

        phone_number: e.g. "555-123-2002".
        """
        customer = customer_with_number(self.db, phone_number)
        if customer is None:
            raise ToolError(f"no customer with phone number {phone_number}")
        return customer

    @tool(READ)
    def get_customer_by_id(self, customer_id: str) -> dict:
        """Get a customer's profile by their customer id.

        customer_id: e.g. "C1001".
        """
        return self._customer(customer_id)

    @tool(READ)
    def get_customer_by_name(self, full_name: str, dob: str) -> list:
        """Find customers by full name and date of birth (both required, for verification).

        full_name: e.g. "John Smith". dob: date of birth, YYYY-MM-DD.
        """
        found = [
            c
            for c in self.db["customers"].values()
            if c["full_name"].lower() == full_name.lower() and c["date_of_birth"] == dob
        ]
        if not found:
            raise ToolError(f"no customer named {full_name} born on {dob}")
        return found

    @tool(READ)
    def get_details_by_id(self, id: str) -> dict:
        """Get the record of a line (L...), device (D...), plan (P...), bill (B...) or customer (C...) by its id.

        id: e.g. "L1002".
        """
        for table in ("lines", "devices", "plans", "bills", "customers"):
            if id in self.db[table]:
                return self.db[table][id]
        raise ToolError(f"nothing has the id {id}")

    @tool(READ)
    def get_available_plans(self) -> list:
        """List every plan: id, name, monthly price, data limit and refueling price per GB."""
        return list(self.db["plans"].values())

    @tool(READ)
    def get_bills_for_customer(self, customer_id: str) -> list:
        """List a customer's bills, newest first.

        customer_id: e.g. "C1001".
        """
        customer = self._customer(customer_id)
        bills = [self.db["bills"][bid] for bid in customer["bill_ids"]]
        return sorted(bills, key=lambda b: b["issue_date"], reverse=True)

    @tool(READ)
    def get_data_usage(self, customer_id: str, line_id: str) -> dict:
        """A line's data use this cycle: used GB, the plan's limit, GB refueled, and the cycle's end.

        customer_id: e.g. "C1001". line_id: e.g. "L1002".
        """
        line = self._line(customer_id, line_id)
        plan = self.db["plans"][line["plan_id"]]
        return {
            "line_id": line_id,
            "data_used_gb": line["data_used_gb"],
            "data_limit_gb": plan["data_limit_gb"],
            "data_refueling_gb": line["data_refueling_gb"],
            "cycle_end_date": "2025-02-28",
        }

    # ------------------------------------------------------------------ write tools

    @tool(WRITE)
    def send_payment_request(self, customer_id: str, bill_id: str) -> str:
        """Send the customer a request to pay a bill; the bill becomes "Awaiting Payment". Does not check
        that the bill is overdue. A customer can have only one bill awaiting payment at a time.

        customer_id: e.g. "C1001". bill_id: e.g. "B1002".
        """
        bill = self._bill(customer_id, bill_id)
        if bill["status"] == "Paid":
            raise ToolError(f"bill {bill_id} is already paid")
        waiting = [b for b in self.get_bills_for_customer(customer_id) if b["status"] == "Awaiting Payment"]
        if waiting:
            raise ToolError(
                f"bill {waiting[0]['bill_id']} is already awaiting payment; only one bill can await payment at a time"
            )
        bill["status"] = "Awaiting Payment"
        return f"Payment request for {bill['total_due']} sent to the customer for bill {bill_id}."

    @tool(WRITE)
    def suspend_line(self, customer_id: str, line_id: str, reason: str) -> str:
        """Suspend an active line.

        customer_id: e.g. "C1001". line_id: e.g. "L1002". reason: why the line is suspended.
        """
        line = self._line(customer_id, line_id)
        if line["status"] != "Active":
            raise ToolError(f"line {line_id} is {line['status']}, only an Active line can be suspended")
        if not reason.strip():
            raise ToolError("a reason is required to suspend a line")
        line.update(status="Suspended", suspension_start_date=TODAY)
        return f"Line {line_id} suspended."

    @tool(WRITE)
    def resume_line(self, customer_id: str, line_id: str) -> str:
        """Lift a line's suspension; the customer must reboot their phone to get service back.

        customer_id: e.g. "C1001". line_id: e.g. "L1002".
        """
        line = self._line(customer_id, line_id)
        if line["status"] != "Suspended":
            raise ToolError(f"line {line_id} is {line['status']}, not Suspended")
        line["status"] = "Active"
        line.pop("suspension_start_date", None)
        return f"Line {line_id} resumed. The customer must reboot their device to get service."

    @tool(WRITE)
    def enable_roaming(self, customer_id: str, line_id: str) -> str:
        """Enable data roaming on a line (free of charge).

        customer_id: e.g. "C1001". line_id: e.g. "L1002".
        """
        return self._roaming(customer_id, line_id, True)

    @tool(WRITE)
    def disable_roaming(self, customer_id: str, line_id: str) -> str:
        """Disable data roaming on a line.

        customer_id: e.g. "C1001". line_id: e.g. "L1002".
        """
        return self._roaming(customer_id, line_id, False)

    def _roaming(self, customer_id: str, line_id: str, on: bool) -> str:
        line = self._line(customer_id, line_id)
        word = "enabled" if on else "disabled"
        if line["roaming_enabled"] == on:
            return f"Roaming is already {word} on line {line_id}."
        line["roaming_enabled"] = on
        return f"Roaming {word} on line {line_id}."

    @tool(WRITE)
    def refuel_data(self, customer_id: str, line_id: str, gb_amount: float) -> str:
        """Add data to a line at its plan's price per GB, charged to the customer's next bill; at most
        2 GB in all per line.

        customer_id: e.g. "C1001". line_id: e.g. "L1002". gb_amount: GB to add, e.g. 1.5.
        """
        line = self._line(customer_id, line_id)
        if not 0 < gb_amount <= MAX_REFUEL_GB - line["data_refueling_gb"] + 1e-9:
            raise ToolError(
                f"gb_amount must be above 0 and at most {money(MAX_REFUEL_GB - line['data_refueling_gb'])} GB (2 GB per line in all)"
            )
        if line["status"] != "Active":
            raise ToolError(f"line {line_id} is {line['status']}; only an Active line can be refueled")
        plan = self.db["plans"][line["plan_id"]]
        charge = money(gb_amount * plan["data_refueling_price_per_gb"])
        line["data_refueling_gb"] = money(line["data_refueling_gb"] + gb_amount)
        self._charge(customer_id, f"Data Refueling {gb_amount} GB - Line {line['phone_number']}", charge)
        return f"Added {gb_amount} GB to line {line_id} for {charge}."

    @tool(WRITE)
    def change_plan(self, customer_id: str, line_id: str, new_plan_id: str) -> str:
        """Move a line to another plan from today.

        customer_id: e.g. "C1001". line_id: e.g. "L1002". new_plan_id: e.g. "P1003".
        """
        line = self._line(customer_id, line_id)
        if new_plan_id not in self.db["plans"]:
            raise ToolError(f"plan {new_plan_id} not found")
        if line["plan_id"] == new_plan_id:
            raise ToolError(f"line {line_id} is already on plan {new_plan_id}")
        line.update(plan_id=new_plan_id, last_plan_change_date=TODAY)
        return f"Line {line_id} is now on plan {new_plan_id}."

    def _charge(self, customer_id: str, description: str, amount: float) -> None:
        """Add a charge to the customer's draft (next) bill, when they have one."""
        for bill in self.get_bills_for_customer(customer_id):
            if bill["status"] == "Draft":
                bill.setdefault("line_items", []).append(
                    {"description": description, "amount": amount, "date": TODAY, "item_type": "Charge"}
                )
                bill["total_due"] = money(bill["total_due"] + amount)
                return

    # ------------------------------------------------------------------ task set-up

    @setup
    def set_data_usage(self, customer_id: str, line_id: str, data_used_gb: float) -> None:
        self._line(customer_id, line_id)["data_used_gb"] = data_used_gb

    @setup
    def suspend_line_for_overdue_bill(
        self, customer_id: str, line_id: str, new_bill_id: str, contract_ended: bool
    ) -> None:
        """An overdue bill for last month's plan charge, and the line suspended for it (and past its contract)."""
        line, customer = self._line(customer_id, line_id), self._customer(customer_id)
        plan = self.db["plans"][line["plan_id"]]
        charge = {
            "description": f"{plan['name']} - Line {line['phone_number']}",
            "amount": plan["price_per_month"],
            "date": "2025-01-05",
            "item_type": "Plan Charge",
        }
        self.db["bills"][new_bill_id] = {
            "bill_id": new_bill_id, "customer_id": customer_id, "period_start": "2025-01-01", "period_end": "2025-01-31",
            "issue_date": "2025-01-05", "total_due": plan["price_per_month"], "due_date": "2025-01-19", "status": "Overdue", "line_items": [charge],
        }  # fmt: skip
        customer["bill_ids"].append(new_bill_id)
        line.update(status="Suspended", suspension_start_date="2025-02-01")
        if contract_ended:
            line["contract_end_date"] = "2025-02-01"

    # ------------------------------------------------------------------ task assertions

    @assertion
    def assert_data_refueling_amount(self, customer_id: str, line_id: str, expected_amount: float) -> bool:
        return abs(self._line(customer_id, line_id)["data_refueling_gb"] - expected_amount) < 1e-9

    @assertion
    def assert_no_overdue_bill(self, overdue_bill_id: str) -> bool:
        bill = self.db["bills"].get(overdue_bill_id)
        return bill is None or bill["status"] == "Paid"


class PhoneTools(Toolkit):
    """The user's side: their phone's settings and apps, and the payment requests they receive."""

    # ------------------------------------------------------------------ what the phone computes

    @property
    def device(self) -> dict:
        return self.db["phone"]["device"]

    def _line(self) -> dict | None:
        number = self.db["phone"]["user"]["phone_number"]
        return next((line for line in self.db["lines"].values() if line["phone_number"] == number), None)

    def _register(self) -> None:
        """A network search: the phone learns whether its line is active."""
        line = self._line()
        self.db["phone"]["registered_line_active"] = line is not None and line["status"] == "Active"

    def _apn_ok(self) -> bool:
        return self.device["active_apn_settings"]["apn_name"] == self.db["phone"]["carrier_apn"]["apn_name"]

    def _service(self) -> str | None:
        """Why there is no service, or None when the phone is connected."""
        d = self.device
        if d["airplane_mode"]:
            return "airplane mode is on"
        if d["sim_card_missing"]:
            return "no SIM card"
        if d["sim_card_status"] != "active":
            return f"SIM card {d['sim_card_status'].replace('_', ' ')}"
        if not self._apn_ok():
            return "incorrect APN settings"
        if not self.db["phone"]["registered_line_active"]:
            return "line not active"
        return None

    def _technology(self) -> str:
        return "none" if self._service() else NETWORK_MODES[self.device["network_mode_preference"]]

    def _data(self) -> str | None:
        """Why mobile data does not work, or None when it does."""
        if self._service():
            return "no service"
        if not self.device["data_enabled"]:
            return "mobile data is off"
        line = self._line()
        if self.db["phone"]["user"]["abroad"] and not (self.device["roaming_enabled"] and line["roaming_enabled"]):
            return "roaming"
        plan = self.db["plans"][line["plan_id"]]
        if line["data_used_gb"] > plan["data_limit_gb"] + line["data_refueling_gb"]:
            return "data limit reached"
        return None

    def _mbps(self) -> float | None:
        if self._data():
            return None
        d = self.device
        mbps = PEAK_MBPS[self._technology()] * SIGNAL_FACTOR[d["network_signal_strength"]]
        if d["data_saver_mode"]:
            mbps *= 0.2
        if d["vpn_connected"] and d["vpn_details"]["server_performance"] == "poor":
            mbps *= 0.1
        return round(mbps, 1)

    def _mms(self) -> str | None:
        """Why an MMS cannot be sent, or None when it can."""
        d = self.device
        if self._data():
            return "no mobile data"
        if self._technology() == "2G":
            return "2G network"
        if d["active_apn_settings"]["mmsc_url"] != self.db["phone"]["carrier_apn"]["mmsc_url"]:
            return "MMSC URL not set"
        if d["wifi_calling_enabled"] and d["wifi_calling_mms_over_wifi"]:
            return "MMS over Wi-Fi calling"
        granted = d["app_statuses"]["messaging"]["permissions"]
        if not (granted["sms"] and granted["storage"]):
            return "messaging app permissions"
        return None

    def _app(self, app_name: str) -> dict:
        if app_name not in self.device["app_statuses"]:
            raise ToolError(
                f"app {app_name} is not installed; installed apps: {', '.join(self.device['app_statuses'])}"
            )
        return self.device["app_statuses"][app_name]

    # ------------------------------------------------------------------ diagnostics (read)

    @tool(READ)
    def check_status_bar(self) -> str:
        """What the status bar at the top of the screen shows: airplane mode, signal, network, data, data saver, Wi-Fi, VPN, battery."""
        d, icons = self.device, []
        if d["airplane_mode"]:
            icons.append("✈️ Airplane Mode")
        if self._service():
            icons.append("📵 No Signal")
        else:
            icons += [
                {"excellent": "📶⁴ Excellent", "good": "📶³ Good", "fair": "📶² Fair", "poor": "📶¹ Poor"}[
                    d["network_signal_strength"]
                ],
                self._technology(),
            ]
        icons.append("📱 Data Enabled" if d["data_enabled"] and not self._service() else "📵 Data Disabled")
        if d["data_saver_mode"]:
            icons.append("🔽 Data Saver")
        if d["wifi_enabled"]:
            icons.append("📡 Enabled")
        if d["vpn_connected"]:
            icons.append("🔒 VPN Connected")
        icons.append(f"🔋 {d['battery_level']}%")
        return "Status bar: " + " | ".join(icons)

    @tool(READ)
    def check_network_status(self) -> dict:
        """The phone's connection to the cellular network and Wi-Fi: airplane mode, signal, network type, mobile data and data roaming."""
        d, off = self.device, self._service()
        return {
            "airplane_mode": d["airplane_mode"], "cellular_connection": "no_service" if off else "connected",
            "signal_strength": "none" if off else d["network_signal_strength"], "network_type": self._technology(),
            "mobile_data_enabled": d["data_enabled"], "data_roaming_enabled": d["roaming_enabled"], "wifi_connected": False,
        }  # fmt: skip

    @tool(READ)
    def check_network_mode_preference(self) -> str:
        """The type of cellular network the phone prefers: 4g_5g_preferred, 4g_only, 3g_only or 2g_only."""
        return f"Network mode preference: {self.device['network_mode_preference']}"

    @tool(READ)
    def check_sim_status(self) -> str:
        """Whether the SIM card works: active, missing, or locked by a PIN or PUK code."""
        d = self.device
        if d["sim_card_missing"]:
            return "SIM card: missing (no SIM card detected)"
        return f"SIM card: {d['sim_card_status'].replace('_', ' ')}"

    @tool(READ)
    def check_data_restriction_status(self) -> str:
        """Whether Data Saver mode or another data limit is on."""
        return f"Data Saver mode is {'ON' if self.device['data_saver_mode'] else 'OFF'}. Background data is not restricted."

    @tool(READ)
    def check_apn_settings(self) -> dict:
        """The APN settings the phone uses for mobile data and picture messages (APN name, MMSC URL), and whether they look correct."""
        apn = dict(self.device["active_apn_settings"])
        apn["mmsc_url"] = apn["mmsc_url"] or "(not set)"
        apn["status"] = "Correct" if self._apn_ok() else "Incorrect"
        return apn

    @tool(READ)
    def check_wifi_status(self) -> str:
        """Whether Wi-Fi is on, which network it is connected to, and the signal."""
        return (
            "Wi-Fi is ON but not connected (no known networks in range)."
            if self.device["wifi_enabled"]
            else "Wi-Fi is OFF."
        )

    @tool(READ)
    def check_wifi_calling_status(self) -> str:
        """Whether Wi-Fi Calling is on, and whether it also carries MMS."""
        d = self.device
        if not d["wifi_calling_enabled"]:
            return "Wi-Fi Calling is OFF."
        return f"Wi-Fi Calling is ON (MMS over Wi-Fi {'ON' if d['wifi_calling_mms_over_wifi'] else 'OFF'})."

    @tool(READ)
    def check_vpn_status(self) -> str:
        """Whether a VPN is on and connected, with its server and performance."""
        d = self.device
        if not d["vpn_connected"]:
            return "VPN is OFF (not connected)."
        details = d["vpn_details"]
        return f"VPN is ON and connected to {details['server_address']}; performance level: {details['server_performance'].capitalize()}."

    @tool(READ)
    def check_installed_apps(self) -> str:
        """The names of the apps installed on the phone."""
        return "Installed apps: " + ", ".join(self.device["app_statuses"])

    @tool(READ)
    def check_app_status(self, app_name: str) -> dict:
        """An app's details: its permissions and background data use.

        app_name: e.g. "messaging".
        """
        return self._app(app_name)

    @tool(READ)
    def check_app_permissions(self, app_name: str) -> str:
        """Which permissions an app has (sms, storage, phone, network).

        app_name: e.g. "messaging".
        """
        granted = [p for p, on in self._app(app_name)["permissions"].items() if on]
        return f"{app_name} has permissions: {', '.join(granted) or 'none'}"

    @tool(READ)
    def run_speed_test(self) -> str:
        """Measure the mobile internet download speed: no connection, very poor, poor, fair, good or excellent."""
        mbps = self._mbps()
        if mbps is None:
            return "Speed test failed: no connection."
        return f"Download speed: {mbps} Mbps ({_speed_word(mbps)})."

    @tool(READ)
    def can_send_mms(self) -> str:
        """Try to send a picture message from the messaging app."""
        return (
            "Your messaging app can send MMS messages."
            if self._mms() is None
            else "Your messaging app cannot send MMS messages."
        )

    @tool(READ)
    def check_payment_request(self) -> str:
        """The payment requests the carrier has sent you, with the amount."""
        waiting = [b for b in self._bills() if b["status"] == "Awaiting Payment"]
        if not waiting:
            return "You have no payment requests."
        return "\n".join(f"Payment request for bill {b['bill_id']}: {b['total_due']} due." for b in waiting)

    def _bills(self) -> list[dict]:
        customer = customer_with_number(self.db, self.db["phone"]["user"]["phone_number"])
        return [self.db["bills"][bid] for bid in customer["bill_ids"]] if customer else []

    # ------------------------------------------------------------------ fixes (write)

    @tool(WRITE)
    def set_network_mode_preference(self, mode: str) -> str:
        """Choose the type of cellular network the phone prefers; it searches the network again.

        mode: one of 4g_5g_preferred, 4g_only, 3g_only, 2g_only.
        """
        if mode not in NETWORK_MODES:
            raise ToolError(f"unknown network mode {mode!r}; choose one of {', '.join(NETWORK_MODES)}")
        self.device["network_mode_preference"] = mode
        return f"Network mode preference set to {mode}. {self.check_status_bar()}"

    @tool(WRITE)
    def toggle_airplane_mode(self) -> str:
        """Turn Airplane Mode on or off (it disconnects every radio)."""
        return self._toggle("airplane_mode", "Airplane Mode", register=True)

    @tool(WRITE)
    def reseat_sim_card(self) -> str:
        """Take the SIM card out and put it back in; the phone searches the network again."""
        self.device["sim_card_missing"] = False
        self._register()
        return f"SIM card reseated. {self.check_status_bar()}"

    @tool(WRITE)
    def toggle_data(self) -> str:
        """Turn mobile data on or off."""
        return self._toggle("data_enabled", "Mobile data")

    @tool(WRITE)
    def toggle_roaming(self) -> str:
        """Turn Data Roaming on or off (data on networks outside the carrier's, e.g. abroad)."""
        return self._toggle("roaming_enabled", "Data Roaming")

    @tool(WRITE)
    def toggle_data_saver_mode(self) -> str:
        """Turn Data Saver mode on or off (it restricts data and can slow it)."""
        return self._toggle("data_saver_mode", "Data Saver mode")

    @tool(WRITE)
    def set_apn_settings(self, apn_name: str, mmsc_url: str) -> str:
        """Enter APN settings by hand; they apply after a reboot.

        apn_name: e.g. "internet". mmsc_url: the MMS server's URL.
        """
        if not apn_name.strip():
            raise ToolError("apn_name must not be empty")
        self.db["phone"]["pending_apn"] = dict(self.device["active_apn_settings"], apn_name=apn_name, mmsc_url=mmsc_url)
        return "APN settings saved. Reboot the device for them to apply."

    @tool(WRITE)
    def reset_apn_settings(self) -> str:
        """Reset the APN settings to the carrier's defaults; they apply after a reboot."""
        self.db["phone"]["pending_apn"] = dict(self.db["phone"]["carrier_apn"])
        return "APN settings reset to default. Reboot the device for them to apply."

    @tool(WRITE)
    def toggle_wifi(self) -> str:
        """Turn Wi-Fi on or off."""
        return self._toggle("wifi_enabled", "Wi-Fi")

    @tool(WRITE)
    def toggle_wifi_calling(self) -> str:
        """Turn Wi-Fi Calling on or off."""
        return self._toggle("wifi_calling_enabled", "Wi-Fi Calling")

    @tool(WRITE)
    def connect_vpn(self) -> str:
        """Connect to the VPN."""
        if self.device["vpn_connected"]:
            raise ToolError("the VPN is already connected")
        self.device.update(
            vpn_enabled_setting=True,
            vpn_connected=True,
            vpn_details={"server_address": "vpn.example.com", "protocol": "IKEv2", "server_performance": "good"},
        )
        return f"VPN connected. {self.check_vpn_status()}"

    @tool(WRITE)
    def disconnect_vpn(self) -> str:
        """Disconnect the VPN."""
        if not self.device["vpn_connected"]:
            raise ToolError("no VPN is connected")
        self.device.update(vpn_enabled_setting=False, vpn_connected=False)
        self.device.pop("vpn_details", None)
        return "VPN disconnected."

    @tool(WRITE)
    def grant_app_permission(self, app_name: str, permission: str) -> str:
        """Give an app a permission.

        app_name: e.g. "messaging". permission: one of sms, storage, phone, network.
        """
        permissions = self._app(app_name)["permissions"]
        if permission not in permissions:
            raise ToolError(f"unknown permission {permission!r}; choose one of {', '.join(permissions)}")
        if permissions[permission]:
            raise ToolError(f"{app_name} already has the {permission} permission")
        permissions[permission] = True
        return f"Granted {permission} permission to {app_name}."

    @tool(WRITE)
    def reboot_device(self) -> str:
        """Restart the phone: saved APN settings apply, and it searches the network again."""
        pending = self.db["phone"].pop("pending_apn", None)
        if pending:
            self.device["active_apn_settings"] = pending
        self._register()
        return f"Device rebooted. {self.check_status_bar()}"

    @tool(WRITE)
    def make_payment(self) -> str:
        """Pay the bill of the payment request you received."""
        waiting = [b for b in self._bills() if b["status"] == "Awaiting Payment"]
        if not waiting:
            raise ToolError("you have no payment request to pay")
        waiting[0]["status"] = "Paid"
        return f"Paid {waiting[0]['total_due']} for bill {waiting[0]['bill_id']}."

    def _toggle(self, key: str, label: str, register: bool = False) -> str:
        self.device[key] = not self.device[key]
        if register:
            self._register()
        return f"{label} is now {'ON' if self.device[key] else 'OFF'}. {self.check_status_bar()}"

    # ------------------------------------------------------------------ task set-up

    @setup
    def set_user_info(self, name: str, phone_number: str) -> None:
        self.db["phone"]["user"].update(name=name, phone_number=phone_number)
        self._register()

    @setup
    def set_user_location(self, abroad: bool) -> None:
        self.db["phone"]["user"]["abroad"] = abroad

    @setup
    def simulate_network_search(self) -> None:
        self._register()

    @setup
    def turn_airplane_mode_on(self) -> None:
        self.device["airplane_mode"] = True

    @setup
    def turn_roaming_on(self) -> None:
        self.device["roaming_enabled"] = True

    @setup
    def turn_roaming_off(self) -> None:
        self.device["roaming_enabled"] = False

    @setup
    def turn_data_off(self) -> None:
        self.device["data_enabled"] = False

    @setup
    def turn_data_saver_mode_on(self) -> None:
        self.device["data_saver_mode"] = True

    @setup
    def set_wifi_calling(self, enabled: bool, mms_over_wifi: bool) -> None:
        self.device.update(wifi_calling_enabled=enabled, wifi_calling_mms_over_wifi=mms_over_wifi)

    @setup
    def break_apn_settings(self) -> None:
        self.device["active_apn_settings"]["apn_name"] = "broken"

    @setup
    def break_apn_mms_setting(self) -> None:
        self.device["active_apn_settings"]["mmsc_url"] = ""

    @setup
    def unseat_sim_card(self) -> None:
        self.device["sim_card_missing"] = True

    @setup
    def lock_sim_card(self, mode: str) -> None:
        self.device["sim_card_status"] = f"locked_{mode}"

    @setup
    def break_vpn(self) -> None:
        self.device.update(
            vpn_enabled_setting=True,
            vpn_connected=True,
            vpn_details={
                "server_address": "vpn.slow-server.example",
                "protocol": "IKEv2",
                "server_performance": "poor",
            },
        )

    @setup
    def remove_app_permission(self, app_name: str, permission: str) -> None:
        self._app(app_name)["permissions"][permission] = False

    # ------------------------------------------------------------------ task assertions

    @assertion
    def assert_service_status(self, expected_status: str) -> bool:
        return ("no_service" if self._service() else "connected") == expected_status

    @assertion
    def assert_mobile_data_status(self, expected_status: bool) -> bool:
        return (self._data() is None) == expected_status

    @assertion
    def assert_internet_speed(self, expected_speed: float, expected_desc: str) -> bool:
        mbps = self._mbps()
        return mbps is not None and mbps >= expected_speed and _speed_word(mbps) == expected_desc

    @assertion
    def assert_can_send_mms(self, expected_status: bool) -> bool:
        return (self._mms() is None) == expected_status


def world(db: dict, user_db: dict) -> dict:
    """The JSON world of both sides from the parsed TOML files: tables keyed by id, the phone beside them."""
    keys = {
        "plans": "plan_id",
        "devices": "device_id",
        "lines": "line_id",
        "customers": "customer_id",
        "bills": "bill_id",
    }
    out = {table: {row[key]: row for row in db.get(table, [])} for table, key in keys.items()}
    device = dict(user_db["device"])
    for derived in ("network_connection_status", "network_technology_connected"):  # computed from the settings
        device.pop(derived, None)
    out["phone"] = {
        "device": device, "user": {"name": None, "phone_number": None, "abroad": False},
        "carrier_apn": dict(device["active_apn_settings"]), "registered_line_active": False,
    }  # fmt: skip
    return out
