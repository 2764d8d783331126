"""tau2 telecom: the carrier's tools, the user's phone and its tools, task set-up, environment
assertions, and conversations in which the user acts on their own phone (no LLM)."""

from __future__ import annotations

import copy
import json

import pytest

from rwml_lite.envs.tau2.toolkit import WRITE


@pytest.fixture(scope="module")
def telecom(tau2_data):
    from rwml_lite.envs.tau2.data import domain

    return domain("telecom")


def task_named(telecom, prefix: str) -> dict:
    return next(t for t in telecom.tasks.values() if t["id"].startswith(prefix))


def test_the_agent_and_the_user_each_have_their_own_typed_tools(telecom):
    tools = telecom.fresh_tools()
    agent, user = tools.tool_names(), tools.phone.tool_names()
    assert (len(agent), len(user)) == (16, 30)
    assert not set(agent) & set(user)  # the agent cannot toggle the phone, nor the user the line
    assert tools.side("user") is tools.phone and tools.side("assistant") is tools
    for schema in tools.schemas() + tools.phone.schemas():
        assert schema["description"] and set(schema["parameters"]["required"]) <= set(
            schema["parameters"]["properties"]
        )
    assert {s["name"]: s for s in tools.schemas()}["refuel_data"]["parameters"]["properties"]["gb_amount"] == {
        "type": "number"
    }


def test_replaying_the_reference_actions_of_both_sides_scores_one_on_every_task(telecom):
    from rwml_lite.envs.tau2.scoring import score

    assert len(telecom.tasks) == 2285
    for task in telecom.tasks.values():
        result = score(telecom, task, task["evaluation_criteria"]["actions"], ["I have fixed the issue."])
        assert result.reward == 1.0, (task["id"], result)
        assert not result.nl_unscored


def test_doing_nothing_scores_zero_on_every_task(telecom):
    """Every scenario is broken until someone acts; where the right answer is a transfer (a locked SIM,
    an ended contract) the phone stays without service but the missing transfer fails the ACTION basis."""
    from rwml_lite.envs.tau2.scoring import score

    for task in telecom.tasks.values():
        result = score(telecom, task, [], [])
        assert result.reward == 0.0, task["id"]
    transfer = task_named(telecom, "[service_issue]lock_sim_card_pin[")
    assert score(telecom, transfer, [], []).parts == {"ENV_ASSERTION": 1.0, "ACTION": 0.0}


def test_every_reference_step_is_needed_unless_a_later_step_redoes_it(telecom):
    """Leaving out any one step of a reference solution fails the task, except a reboot whose network
    search a later reboot or SIM reseat repeats (8 steps in the 2,285 tasks)."""
    from rwml_lite.envs.tau2.scoring import score

    spared = []
    for task in telecom.tasks.values():
        actions = task["evaluation_criteria"]["actions"]
        for i, action in enumerate(actions):
            if score(telecom, task, actions[:i] + actions[i + 1 :], ["ok"]).reward == 1.0:
                later = [a["name"] for a in actions[i + 1 :]]
                assert action["name"] == "reboot_device" and ("reboot_device" in later or "reseat_sim_card" in later), (
                    task["id"],
                    action,
                )
                spared.append(task["id"])
    assert len(spared) == 8


def test_one_wrong_argument_scores_zero(telecom):
    from rwml_lite.envs.tau2.scoring import score

    wrong = {"refuel_data": ("gb_amount", 1.0), "enable_roaming": ("line_id", "L1001"), "grant_app_permission": ("permission", "phone"),
             "send_payment_request": ("bill_id", "B1002"), "resume_line": ("line_id", "L1003")}  # fmt: skip
    changed = 0
    for task in telecom.tasks.values():
        actions = copy.deepcopy(task["evaluation_criteria"]["actions"])
        target = next((a for a in actions if a["name"] in wrong), None)
        if target is None:
            continue
        key, value = wrong[target["name"]]
        target["arguments"][key] = value
        assert score(telecom, task, actions, ["ok"]).reward == 0.0, (task["id"], target["name"])
        changed += 1
    assert changed > 2000


BAD_CALLS = [
    ("assistant", "send_payment_request", {"customer_id": "C1001", "bill_id": "B1001"}),  # already paid
    ("assistant", "send_payment_request", {"customer_id": "C1002", "bill_id": "B1001"}),  # someone else's bill
    (
        "assistant",
        "suspend_line",
        {"customer_id": "C1001", "line_id": "L1003", "reason": "overdue"},
    ),  # already suspended
    ("assistant", "resume_line", {"customer_id": "C1001", "line_id": "L1002"}),  # active
    ("assistant", "enable_roaming", {"customer_id": "C9999", "line_id": "L1002"}),
    ("assistant", "disable_roaming", {"customer_id": "C1001", "line_id": "L1004"}),  # not their line
    ("assistant", "refuel_data", {"customer_id": "C1001", "line_id": "L1002", "gb_amount": 2.5}),  # over 2 GB
    ("assistant", "refuel_data", {"customer_id": "C1001", "line_id": "L1003", "gb_amount": 1.0}),  # suspended line
    ("assistant", "change_plan", {"customer_id": "C1001", "line_id": "L1002", "new_plan_id": "P9999"}),
    ("assistant", "calculate", {"expression": "import os"}),
    ("user", "set_network_mode_preference", {"mode": "6g_only"}),
    ("user", "grant_app_permission", {"app_name": "camera", "permission": "storage"}),
    ("user", "grant_app_permission", {"app_name": "messaging", "permission": "sms"}),  # already granted
    ("user", "set_apn_settings", {"apn_name": " ", "mmsc_url": ""}),
    ("user", "disconnect_vpn", {}),  # none connected
    ("user", "make_payment", {}),  # no request received
]
NO_ERROR_PATH = {"toggle_airplane_mode", "toggle_data", "toggle_roaming", "toggle_data_saver_mode", "toggle_wifi", "toggle_wifi_calling",
                 "reseat_sim_card", "reset_apn_settings", "reboot_device", "connect_vpn", "transfer_to_human_agents"}  # fmt: skip


def test_each_write_tool_has_error_paths_that_answer_with_an_error_and_change_nothing(telecom):
    tools = telecom.fresh_tools(task_named(telecom, "[service_issue]airplane_mode_on["))
    pristine, covered = tools.db_hash(), set()
    for side, name, arguments in BAD_CALLS:
        reply = tools.side(side).call(name, arguments)
        assert not reply.ok and reply.content.startswith("Error:"), (name, reply.content)
        assert tools.db_hash() == pristine, name
        covered.add(name)
    writes = {n for t in (tools, tools.phone) for n, kind in t.tool_names().items() if kind == WRITE}
    assert writes - NO_ERROR_PATH <= covered
    assert tools.phone.call("connect_vpn", {}).ok and not tools.phone.call("connect_vpn", {}).ok  # only once


def test_a_broken_task_file_is_a_clear_error(telecom):
    from rwml_lite.errors import RwmlError

    task = copy.deepcopy(task_named(telecom, "[service_issue]airplane_mode_on["))
    task["initial_state"]["initialization_actions"].append(
        {"env_type": "user", "func_name": "melt_phone", "arguments": {}}
    )
    with pytest.raises(RwmlError, match="melt_phone"):
        telecom.fresh_tools(task)


# ---------------------------------------------------------------- how the phone behaves


def test_a_resumed_line_needs_a_reboot_and_a_reset_apn_applies_at_the_reboot(telecom):
    tools = telecom.fresh_tools(task_named(telecom, "[service_issue]break_apn_settings|overdue_bill_suspension["))
    phone = tools.phone
    assert "No Signal" in phone.call("check_status_bar", {}).content
    assert json.loads(phone.call("check_apn_settings", {}).content)["status"] == "Incorrect"
    assert phone.call("reset_apn_settings", {}).ok
    assert json.loads(phone.call("check_apn_settings", {}).content)["status"] == "Incorrect"  # not before the reboot
    phone.call("reboot_device", {})
    assert json.loads(phone.call("check_apn_settings", {}).content)["status"] == "Correct"
    assert tools.call("send_payment_request", {"customer_id": "C1001", "bill_id": "B1234321"}).ok
    assert "B1234321" in phone.call("check_payment_request", {}).content
    assert phone.call("make_payment", {}).ok and tools.holds("assert_no_overdue_bill", {"overdue_bill_id": "B1234321"})
    assert tools.call("resume_line", {"customer_id": "C1001", "line_id": "L1002"}).ok
    assert not phone.holds(
        "assert_service_status", {"expected_status": "connected"}
    )  # the phone has not searched again
    assert "Good" in phone.call("reboot_device", {}).content
    assert phone.holds("assert_service_status", {"expected_status": "connected"})


def test_speed_follows_network_mode_data_saver_and_a_poor_vpn(telecom):
    tools = telecom.fresh_tools(task_named(telecom, "[mobile_data_issue]bad_vpn|data_saver_mode_on["))
    phone = tools.phone

    def speed() -> str:
        return phone.call("run_speed_test", {}).content

    assert speed() == "Download speed: 4.0 Mbps (poor)."  # 5G at good signal, x0.2 data saver, x0.1 a poor VPN server
    phone.call("disconnect_vpn", {})
    assert speed() == "Download speed: 40.0 Mbps (good)."
    phone.call("toggle_data_saver_mode", {})
    assert speed() == "Download speed: 200.0 Mbps (excellent)."
    phone.call("set_network_mode_preference", {"mode": "4g_only"})
    assert speed() == "Download speed: 80.0 Mbps (good)." and not phone.holds(
        "assert_internet_speed", {"expected_speed": 200, "expected_desc": "excellent"}
    )
    phone.call("toggle_data", {})
    assert speed() == "Speed test failed: no connection." and phone.holds(
        "assert_mobile_data_status", {"expected_status": False}
    )


def test_abroad_data_needs_roaming_on_the_phone_and_on_the_line(telecom):
    tools = telecom.fresh_tools(task_named(telecom, "[mobile_data_issue]user_abroad_roaming_disabled_off["))
    phone = tools.phone
    phone.call("toggle_roaming", {})
    assert not phone.holds("assert_mobile_data_status", {"expected_status": True})
    assert tools.call("enable_roaming", {"customer_id": "C1001", "line_id": "L1002"}).ok
    assert phone.holds("assert_mobile_data_status", {"expected_status": True})


def test_mms_needs_3g_an_mmsc_url_no_mms_over_wifi_calling_and_both_permissions(telecom):
    tools = telecom.fresh_tools(
        task_named(
            telecom,
            "[mms_issue]bad_network_preference|bad_wifi_calling|break_apn_mms_setting|break_app_both_permissions[",
        )
    )
    phone = tools.phone
    fixes = [("set_network_mode_preference", {"mode": "3g_only"}), ("toggle_wifi_calling", {}), ("reset_apn_settings", {}), ("reboot_device", {}),
             ("grant_app_permission", {"app_name": "messaging", "permission": "sms"}), ("grant_app_permission", {"app_name": "messaging", "permission": "storage"})]  # fmt: skip
    for name, arguments in fixes:
        assert phone.call("can_send_mms", {}).content == "Your messaging app cannot send MMS messages."
        assert phone.call(name, arguments).ok, name
    assert phone.call("can_send_mms", {}).content == "Your messaging app can send MMS messages."


# ---------------------------------------------------------------- conversations


def test_the_user_acts_on_their_phone_and_the_agent_sees_only_their_messages(tau2_data):
    """The agent asks; the simulated user calls their own tool, reads its result, and answers in words.
    Their calls count toward scoring with requestor "user"."""
    from conftest import ScriptedGenerator
    from rwml_lite.envs.tau2.episode import Tau2Env
    from rwml_lite.models import Sampling

    def user(messages, _):
        last = messages[-1]["content"]
        if last.startswith("Please turn on data roaming"):
            return '<tool_call>{"name": "toggle_roaming", "arguments": {}}</tool_call>'
        if last.startswith("Tool (toggle_roaming):"):
            return '<tool_call>{"name": "run_speed_test", "arguments": {}}</tool_call>'
        if last.startswith("Tool (run_speed_test):"):
            return f"The speed test says: {last.split(': ', 1)[1]} ###STOP###"
        return "My mobile data does not work here in France."

    env = Tau2Env(
        ["telecom"],
        max_steps=10,
        user=ScriptedGenerator(user),
        user_sampling=Sampling(temperature=0.0, max_new_tokens=64),
    )
    assert len(env.tasks("train")) == 74 and len(env.tasks("test")) == 40
    task_id = "telecom/[mobile_data_issue]user_abroad_roaming_enabled_off[PERSONA:None]"
    assert env.reset(task_id, seed=0) == "User: My mobile data does not work here in France."
    system = env.user_view[0]["content"]
    manual = "Understanding and Troubleshooting Your Phone's Mobile Data"
    assert (
        "toggle_roaming()" in system and "<tool_call>" in system and manual not in system
    )  # the user's tools, not the agent's manual
    assert (
        manual in env.goal and "\n- refuel_data(" in env.goal and "\n- toggle_roaming(" not in env.goal
    )  # its tools, not the phone's
    looked_up = env.step(
        '<tool_call>{"name": "get_customer_by_phone", "arguments": {"phone_number": "555-123-2002"}}</tool_call>'
    )
    assert looked_up.valid and "C1001" in looked_up.observation
    step = env.step("Please turn on data roaming on your phone, then run a speed test.")
    assert step.observation == "User: The speed test says: Download speed: 200.0 Mbps (excellent). ###STOP###"
    assert step.done and step.won and step.reward == 1.0 and step.info["kind"] == "user"
    assert [(c["name"], c["requestor"]) for c in env.calls] == [
        ("get_customer_by_phone", "assistant"),
        ("toggle_roaming", "user"),
        ("run_speed_test", "user"),
    ]


def test_the_user_turns_of_a_round_share_one_generate_call(tau2_data):
    """In collect and eval every live conversation waits for its user at once: one batched call
    answers them all, also through the user's own tool rounds; a failing conversation raises."""
    from conftest import ScriptedGenerator
    from rwml_lite.config import EnvSettings
    from rwml_lite.envs import list_tasks
    from rwml_lite.envs.pool import EnvPool
    from rwml_lite.errors import RwmlError

    batches = []

    class Counting(ScriptedGenerator):
        def generate(self, prompts, n, sampling):
            batches.append(len(prompts))
            return super().generate(prompts, n, sampling)

    def user(messages, _):
        if messages[-1]["content"] == "Please check your status bar.":
            return '<tool_call>{"name": "check_status_bar", "arguments": {}}</tool_call>'
        return "My phone has no service."

    settings = EnvSettings(name="tau2", domains=["telecom"])
    with EnvPool(settings, max_steps=5, user=Counting(user)) as pool:
        tasks = {slot: (task, 0) for slot, task in enumerate(list_tasks(settings, "train", 4))}
        starts = pool.reset(tasks)
        assert batches == [4] and all(s.observation == "User: My phone has no service." for s in starts.values())
        outcomes = pool.step({slot: "Please check your status bar." for slot in tasks})
        assert batches == [4, 4, 4]  # the tool round, then the message
        assert all(o.step.observation == "User: My phone has no service." for o in outcomes.values())
        with pytest.raises(RwmlError, match="no-such-task"):
            pool.reset({0: tasks[0], 9: ("telecom/no-such-task", 0)})
