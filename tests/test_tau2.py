"""tau2 airline and retail over upstream's data: tools, schemas, and the scoring oracle (no LLM)."""

from __future__ import annotations

import copy

import pytest

from rwml_lite.envs.tau2.toolkit import WRITE


@pytest.fixture(scope="module", params=["airline", "retail"])
def domain(request, tau2_data):
    from rwml_lite.envs.tau2.data import domain

    return domain(request.param)


def writes(domain, task) -> list[dict]:
    kinds = domain.fresh_tools().tool_names()
    return [a for a in task["evaluation_criteria"]["actions"] or [] if kinds[a["name"]] == WRITE]


def changes_the_database(domain, actions: list[dict], action: dict) -> bool:
    """Whether `action`, replayed after the actions before it, changes the database (some reference
    writes set a value already there, e.g. the address a user already has)."""
    tools = domain.fresh_tools()
    for earlier in actions[: actions.index(action)]:
        tools.call(earlier["name"], earlier["arguments"])
    before = tools.db_hash()
    tools.call(action["name"], action["arguments"])
    return tools.db_hash() != before


def test_each_domain_has_its_tools_with_typed_schemas(domain):
    tools = domain.fresh_tools()
    assert len(tools.tool_names()) == {"airline": 14, "retail": 16}[domain.name]
    schemas = {s["name"]: s for s in tools.schemas()}
    assert schemas.keys() == tools.tool_names().keys()
    for schema in schemas.values():
        assert schema["description"] and schema["parameters"]["type"] == "object"
        assert set(schema["parameters"]["required"]) <= set(schema["parameters"]["properties"])
    if domain.name == "airline":
        flights = schemas["book_reservation"]["parameters"]["properties"]["flights"]
        assert flights == {"type": "array", "items": {"type": "object"}}
        assert schemas["send_certificate"]["parameters"]["properties"]["amount"] == {"type": "integer"}


def test_replaying_the_reference_actions_and_telling_the_facts_scores_one_on_every_task(domain):
    from rwml_lite.envs.tau2.scoring import score

    unscored = []
    for task in domain.tasks.values():
        criteria = task["evaluation_criteria"]
        result = score(
            domain, task, criteria["actions"] or [], ["Done. " + " ".join(criteria.get("communicate_info") or [])]
        )
        assert result.reward == 1.0, (task["id"], result)
        if result.nl_unscored:
            unscored.append(task["id"])
    assert len(domain.tasks) == {"airline": 50, "retail": 114}[domain.name]
    # retail's NL assertions need an LLM judge: those tasks are scored on the database alone, and listed
    assert len(unscored) == {"airline": 0, "retail": 40}[domain.name]


def test_reference_writes_are_accepted_and_a_refused_one_changes_nothing(domain):
    """A reference solution may hold a refused step (retail task 64 tries an exchange on a pending
    order, then modifies it): a refused write changes nothing; each task has a write that is accepted."""
    refused = []
    for task in domain.tasks.values():
        tools = domain.fresh_tools()
        succeeded = 0
        for action in writes(domain, task):
            before = tools.db_hash()
            reply = tools.call(action["name"], action["arguments"])
            assert reply.ok or tools.db_hash() == before, (task["id"], action["name"], reply.content[:200])
            succeeded += reply.ok
            if not reply.ok:
                refused.append((task["id"], action["name"]))
        assert succeeded or not writes(domain, task), task["id"]
    assert len(refused) <= 2, refused  # our tools accept what upstream's reference solutions do


def test_doing_nothing_scores_zero_where_the_reference_writes_and_one_on_read_only_tasks(domain):
    from rwml_lite.envs.tau2.scoring import DEFAULT_BASIS, score

    for task in domain.tasks.values():
        criteria = task["evaluation_criteria"]
        needs_telling = "COMMUNICATE" in (criteria.get("reward_basis") or DEFAULT_BASIS) and criteria.get(
            "communicate_info"
        )
        expected = 0.0 if writes(domain, task) or needs_telling else 1.0
        assert score(domain, task, [], []).reward == expected, task["id"]


def test_one_wrong_argument_in_one_write_call_scores_zero(domain):
    from rwml_lite.envs.tau2.scoring import score

    for task in domain.tasks.values():
        actions = copy.deepcopy(task["evaluation_criteria"]["actions"] or [])
        # the last write that changes the database (retail task 22 changes an address and later restores it)
        target = next(
            (a for a in reversed(actions) if a in writes(domain, task) and changes_the_database(domain, actions, a)),
            None,
        )
        if target is None:
            continue
        name, value = next((k, v) for k, v in target["arguments"].items() if isinstance(v, str))
        target["arguments"][name] = value + "X"
        messages = [" ".join(task["evaluation_criteria"].get("communicate_info") or [])]
        assert score(domain, task, actions, messages).reward == 0.0, (task["id"], target["name"], name)


def test_an_episode_cut_by_a_limit_scores_zero(domain):
    from rwml_lite.envs.tau2.scoring import score

    task = next(iter(domain.tasks.values()))
    criteria = task["evaluation_criteria"]
    assert (
        score(
            domain,
            task,
            criteria["actions"] or [],
            [" ".join(criteria.get("communicate_info") or [])],
            ended_normally=False,
        ).reward
        == 0.0
    )


BAD_CALLS = {
    "airline": [
        ("get_user_details", {"user_id": "nobody_0000"}),
        ("get_reservation_details", {"reservation_id": "ZZZZZZ"}),
        ("get_flight_status", {"flight_number": "HAT999", "date": "2024-05-16"}),
        ("book_reservation", {"user_id": "mia_li_3668", "origin": "JFK", "destination": "SEA", "flight_type": "one_way", "cabin": "economy",
                              "flights": [{"flight_number": "HAT136", "date": "2024-05-20"}], "passengers": [{"first_name": "Mia", "last_name": "Li", "dob": "1990-04-05"}],
                              "payment_methods": [{"payment_id": "credit_card_4421486", "amount": 1}], "total_baggages": 0, "nonfree_baggages": 0, "insurance": "no"}),
        ("book_reservation", {"user_id": "mia_li_3668", "origin": "JFK", "destination": "SEA", "flight_type": "one_way", "cabin": "first",
                              "flights": [], "passengers": [], "payment_methods": [], "total_baggages": 0, "nonfree_baggages": 0, "insurance": "no"}),
        ("cancel_reservation", {"reservation_id": "ZZZZZZ"}),
        ("update_reservation_flights", {"reservation_id": "4WQ150", "cabin": "economy", "flights": [{"flight_number": "HAT170", "date": "2024-05-22"}], "payment_id": "credit_card_0"}),
        ("update_reservation_passengers", {"reservation_id": "4WQ150", "passengers": [{"first_name": "A", "last_name": "B", "dob": "2000-01-01"}]}),
        ("update_reservation_baggages", {"reservation_id": "4WQ150", "total_baggages": 1, "nonfree_baggages": 0, "payment_id": "gift_card_3576581"}),
        ("send_certificate", {"user_id": "mia_li_3668", "amount": -5}),
        ("calculate", {"expression": "__import__('os')"}),
    ],
    "retail": [
        ("find_user_id_by_email", {"email": "nobody@example.com"}),
        ("get_order_details", {"order_id": "#W0000000"}),
        ("cancel_pending_order", {"order_id": "#W4817420", "reason": "no longer needed"}),  # delivered, not pending
        ("cancel_pending_order", {"order_id": "#W5199551", "reason": "changed my mind"}),
        ("modify_pending_order_address", {"order_id": "#W4817420", "address1": "1 A St", "address2": "", "city": "X", "state": "TX", "country": "USA", "zip": "00000"}),
        ("modify_pending_order_items", {"order_id": "#W4776164", "item_ids": ["8349118980"], "new_item_ids": ["6469567736"], "payment_method_id": "credit_card_9513926"}),
        ("modify_pending_order_payment", {"order_id": "#W4776164", "payment_method_id": "paypal_0"}),
        ("return_delivered_order_items", {"order_id": "#W4817420", "item_ids": ["0000000000"], "payment_method_id": "credit_card_0"}),
        ("exchange_delivered_order_items", {"order_id": "#W4817420", "item_ids": ["6777246137"], "new_item_ids": ["6777246137"], "payment_method_id": "credit_card_0"}),
        ("exchange_delivered_order_items", {"order_id": "#W4316152", "item_ids": ["7292993796"], "new_item_ids": ["6777246137"], "payment_method_id": "gift_card_7245904"}),  # not a kettle
        ("modify_user_address", {"user_id": "nobody_0000", "address1": "1 A St", "address2": "", "city": "X", "state": "TX", "country": "USA", "zip": "00000"}),
    ],
}  # fmt: skip


def test_each_write_tool_has_error_paths_that_answer_with_an_error_and_change_nothing(domain):
    tools = domain.fresh_tools()
    pristine = tools.db_hash()
    covered = set()
    for name, arguments in BAD_CALLS[domain.name]:
        reply = tools.call(name, arguments)
        assert not reply.ok and reply.content.startswith("Error:"), (name, reply.content[:200])
        assert tools.db_hash() == pristine, name
        covered.add(name)
    assert {n for n, kind in tools.tool_names().items() if kind == WRITE} <= covered


def test_malformed_calls_are_answered_with_errors_and_never_raise(domain):
    tools = domain.fresh_tools()
    pristine = tools.db_hash()
    name = next(n for n, kind in tools.tool_names().items() if kind == WRITE)
    for call_name, arguments in [
        ("no_such_tool", {}),
        (name, {}),
        (name, "not an object"),
        ("calculate", {"expression": "1+1", "extra": 1}),
        ("calculate", {"expression": "1/0"}),
    ]:
        reply = tools.call(call_name, arguments)
        assert not reply.ok and reply.content.startswith("Error:")
    assert tools.call("calculate", {"expression": "2 * (350 - 122)"}).content == "456"
    assert tools.db_hash() == pristine


# ---------------------------------------------------------------- conversations


def conversation(tau2_data, reply):
    from conftest import ScriptedGenerator
    from rwml_lite.envs.tau2.episode import Tau2Env
    from rwml_lite.models import Sampling

    user = ScriptedGenerator(reply)
    return Tau2Env(
        ["airline", "retail"], max_steps=30, user=user, user_sampling=Sampling(temperature=0.0, max_new_tokens=64)
    ), user


def tool_call(name: str, arguments: dict) -> str:
    import json

    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def test_an_agent_that_plays_the_reference_solution_wins_the_conversation(tau2_data):
    def user(messages, _):
        last = messages[-1]["content"]
        return (
            "Thank you, that is all. ###STOP###"
            if last.startswith("All done")
            else "Hi, I need help with my reservation."
        )

    env, simulator = conversation(tau2_data, user)
    first = env.reset("airline/1", seed=0)
    assert first == "User: Hi, I need help with my reservation."
    system = env.user_view[0]["content"]  # the simulator's prompt: upstream's guidelines + this task's scenario
    assert "###STOP###" in system and "<scenario>" in system and "Known info" in system
    criteria = env.task["evaluation_criteria"]
    for action in criteria["actions"]:
        step = env.step(tool_call(action["name"], action["arguments"]))
        assert step.valid and not step.done and step.observation.startswith(f"Tool ({action['name']}):")
    step = env.step("All done. " + " ".join(criteria["communicate_info"]))
    assert step.done and step.won and step.reward == 1.0 and step.info["ended"] == "user"


def test_a_judge_scores_the_nl_assertions_it_reads_in_the_whole_conversation(tau2_data):
    """With env.judge_endpoint a model answers YES/NO per NL assertion over the transcript (tool calls
    included); without it the task is scored on the database and flagged."""
    from conftest import ScriptedGenerator
    from rwml_lite.envs.tau2.judge import met

    assert (
        met("<think>the agent did</think> YES, it did.")
        and met("**Yes** - it did")
        and not met("No.")
        and not met("It is unclear")
    )
    env, _ = conversation(
        tau2_data,
        lambda messages, _: "Thanks, bye. ###STOP###" if messages[-1]["content"].startswith("All done") else "Hi.",
    )
    task_id = next(t for t in env.tasks("train") if t.startswith("retail/") and _nl(tau2_data, t))
    asked = []
    for answer, expected in [("YES", 1.0), ("NO, the agent did not.", 0.0), (None, 1.0)]:
        env.judge = (
            None
            if answer is None
            else ScriptedGenerator(lambda messages, _: asked.append(messages[-1]["content"]) or answer)
        )
        env.reset(task_id, seed=0)
        criteria = env.task["evaluation_criteria"]
        for action in criteria["actions"]:
            env.step(tool_call(action["name"], action["arguments"]))
        step = env.step("All done. " + " ".join(criteria.get("communicate_info") or []))
        assert step.done and step.reward == expected, answer
        assert step.info["nl_unscored"] == (answer is None)
        assert ("NL_ASSERTION" in step.info["score_parts"]) == (answer is not None)
    assertions = env.task["evaluation_criteria"]["nl_assertions"]
    assert len(asked) == 2 * len(assertions) and all(f"Expectation: {a}" in q for a, q in zip(assertions, asked))
    first_call = criteria["actions"][0]["name"]
    assert (
        f"Agent tool call: {first_call}(" in asked[0] and "Customer: Hi." in asked[0] and "Agent: All done." in asked[0]
    )


def _nl(tau2_data, task_id: str) -> bool:
    from rwml_lite.envs.tau2.data import domain

    name, _, local = task_id.partition("/")
    criteria = domain(name).tasks[local]["evaluation_criteria"]
    return bool(criteria.get("nl_assertions")) and "NL_ASSERTION" in (criteria.get("reward_basis") or [])


def test_malformed_tool_calls_are_invalid_error_messages_and_the_conversation_goes_on(tau2_data):
    env, _ = conversation(tau2_data, lambda messages, _: "Hello.")
    env.reset("retail/0", seed=0)
    for bad in [
        "<tool_call>{not json</tool_call>",
        tool_call("no_such_tool", {}),
        tool_call("get_order_details", {}),
        '<tool_call>["a list"]</tool_call>',
    ]:
        step = env.step(bad)
        assert not step.valid and not step.done and "Error" in step.observation
    assert env.step(tool_call("get_order_details", {"order_id": "#W4817420"})).valid


def test_the_step_limit_ends_the_conversation_with_zero(tau2_data):
    env, _ = conversation(tau2_data, lambda messages, _: "Hello.")
    env.max_steps = 3
    env.reset("airline/0", seed=0)
    steps = [env.step("How can I help?") for _ in range(3)]
    assert [s.done for s in steps] == [False, False, True]
    assert steps[-1].reward == 0.0 and steps[-1].info["ended"] == "limit"


def test_tasks_follow_the_official_splits(tau2_data):
    env, _ = conversation(tau2_data, lambda messages, _: "Hello.")
    assert len(env.tasks("train")) == 30 + 74 and len(env.tasks("test")) == 20 + 40
    assert env.task_type("retail/5") == "retail"


def test_tool_output_masking_keeps_keys_and_types_and_removes_every_value():
    import json

    from rwml_lite.envs.tau2.masking import mask_tool_output

    reply = json.dumps(
        {
            "user_id": "mia_li_3668",
            "membership": "gold",
            "saved": [{"dob": "1957-03-21", "age": 67}],
            "balance": 12.5,
            "ok": True,
            "note": None,
        }
    )
    masked = mask_tool_output(reply)
    assert json.loads(masked) == {
        "user_id": "string",
        "membership": "string",
        "saved": [{"dob": "string", "age": "integer"}],
        "balance": "number",
        "ok": "boolean",
        "note": "null",
    }
    for value in ("mia_li_3668", "gold", "1957-03-21", "67", "12.5"):
        assert value not in masked
    assert mask_tool_output("Error: user nobody not found") == "Error: user nobody not found"
    assert mask_tool_output("Transfer successful") == "Transfer successful"


def test_tool_reply_reward_is_rouge_l_rounded_to_a_fifth():
    from rwml_lite.reward import rouge_l_f1, rounded_rouge

    assert rouge_l_f1("the cat sat on the mat", "the cat sat on the mat") == 1.0
    assert rouge_l_f1("a b c d", "a x c y") == 0.5  # LCS "a c": precision 2/4, recall 2/4
    assert rouge_l_f1("", "something") == 0.0 and rouge_l_f1("alpha", "beta") == 0.0
    assert rounded_rouge("a b c d", "a x c y") == 0.6  # F1 0.5, halfway between 0.4 and 0.6: half up
    seven = "a b c d e f g"
    assert rouge_l_f1(seven + " h i j", seven + " x y z") == pytest.approx(0.7)
    assert rounded_rouge(seven + " h i j", seven + " x y z") == 0.8  # 0.7 * 5 = 3.4999...: still a half, up
    assert rounded_rouge("a b c d e", "a b c d x") == 0.8
    assert {rounded_rouge("one two three", other) for other in ("one two three", "one two", "one", "four")} <= {
        0.0,
        0.2,
        0.4,
        0.6,
        0.8,
        1.0,
    }


# ---------------------------------------------------------------- the pipeline on tau2


def test_collected_conversations_become_triplets_with_masked_tool_replies(tmp_path, tau2_data):
    import json

    from conftest import ScriptedGenerator
    from rwml_lite.config import AgentSettings, EnvSettings
    from rwml_lite.models import Sampling
    from rwml_lite.rollout import episode_specs, run_episodes
    from rwml_lite.worldmodel import build_triplets

    turns = iter(
        [
            f"<action>{tool_call('get_order_details', {'order_id': '#W4817420'})}</action>",
            "<action>Your order was delivered.</action>",
        ]
    )
    agent = ScriptedGenerator(lambda prompt, i: next(turns))
    user = ScriptedGenerator(
        lambda messages, i: "I want to know where my order is." if len(messages) == 2 else "Thanks! ###STOP###"
    )
    episodes = run_episodes(
        tmp_path / "rollouts.jsonl", episode_specs(["retail/0"], "train", 1, 0), EnvSettings(name="tau2", domains=["retail"]),
        agent, Sampling(temperature=0.0), AgentSettings(parallel_episodes=1), 5, "collect", user,
    )  # fmt: skip
    [episode] = episodes
    assert [s["kind"] for s in episode["steps"]] == ["tool", "user"]
    assert episode["final"]["ended"] == "user" and "DB" in episode["final"]["score_parts"]
    triplets, dropped = build_triplets(episodes, history=2)
    tool, said = triplets
    assert tool["kind"] == "tool" and tool["next_observation"].startswith("Tool (get_order_details): {")
    masked = json.loads(tool["next_observation"].partition("): ")[2])
    assert masked["order_id"] == "string" and masked["items"][0]["price"] == "number"  # structure kept, values gone
    assert "#W4817420" in episode["steps"][0]["next_observation"] and "#W4817420" not in tool["next_observation"]
    assert said["kind"] == "user" and said["next_observation"] == "User: Thanks! ###STOP###"
    # the world-model prompt holds the tools and the customer's profile facts, not their intent nor the policy
    prompt = tool["prompt"][1]["content"]
    scenario = env_task_scenario(tau2_data, "retail", "0")
    assert "Tools:\n- calculate(expression: string)" in prompt and scenario["known_info"] in prompt
    assert scenario["reason_for_call"] not in prompt and "# Retail agent policy" not in prompt


def env_task_scenario(tau2_data, name: str, task_id: str) -> dict:
    from rwml_lite.envs.tau2.data import domain

    return domain(name).tasks[task_id]["user_scenario"]["instructions"]


def test_tool_replies_score_rouge_and_user_replies_the_embedding(minilm):
    from rwml_lite.reward import NextStateReward

    reward = NextStateReward(minilm, tau_d=0.4)
    real = '{"order_id": "string", "status": "string"}'
    completions = [f"<next_state>{real}</next_state>", '<next_state>{"order_id": "string"}</next_state>', "no tag"]
    assert reward.score(completions, [real] * 3, ["tool"] * 3) == [1.0, 0.6, 0.0]
    user_real = "User: Thanks, that is all."
    assert reward.score([f"<next_state>{user_real}</next_state>"], [user_real], ["user"]) == [1.0]


def test_tau2_recipes_refuse_worker_processes(tmp_path):
    from rwml_lite.config import build_recipe
    from rwml_lite.errors import RwmlError

    base = {
        "model": {"name_or_path": "x"},
        "env": {"name": "tau2", "domains": ["retail"]},
        "collect": {"split": "train"},
        "eval": {"splits": ["test"]},
    }
    build_recipe(base, [], "test")
    with pytest.raises(RwmlError, match="env.workers=2"):
        build_recipe(base, ["env.workers=2"], "test")


def test_an_openai_compatible_endpoint_can_play_the_user_or_judge(tau2_data):
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from rwml_lite.errors import RwmlError
    from rwml_lite.models import Sampling
    from rwml_lite.models.endpoint import EndpointGenerator

    seen = []

    class Server(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, body))
            reply = json.dumps({"choices": [{"message": {"content": f"reply {i}"}} for i in range(body["n"])]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        generator = EndpointGenerator(f"http://127.0.0.1:{server.server_port}/v1", "user-model")
        out = generator.generate([[{"role": "user", "content": "Hi"}]], 2, Sampling(temperature=0.5, max_new_tokens=7))
        assert out == [["reply 0", "reply 1"]]
        path, body = seen[0]
        assert (
            path == "/v1/chat/completions"
            and body["model"] == "user-model"
            and body["max_tokens"] == 7
            and body["temperature"] == 0.5
        )
        # the recipe's judge fields build the judge of the conversations
        from rwml_lite.config import EnvSettings
        from rwml_lite.envs import make_env

        settings = EnvSettings(
            name="tau2",
            domains=["retail"],
            judge_endpoint=f"http://127.0.0.1:{server.server_port}/v1",
            judge_model="judge-model",
        )
        env = make_env(settings, max_steps=3, user=generator)
        assert (
            env.judge.generate([[{"role": "user", "content": "Met?"}]], 1, Sampling()) == [["reply 0"]]
            and seen[-1][1]["model"] == "judge-model"
        )
    finally:
        server.shutdown()
    with pytest.raises(RwmlError, match="env.user_endpoint"):
        EndpointGenerator("http://127.0.0.1:9/v1", "m", timeout=2).generate(
            [[{"role": "user", "content": "Hi"}]], 1, Sampling()
        )
    with pytest.raises(RwmlError, match="env.judge_endpoint=null to leave NL assertions unscored"):
        EndpointGenerator("http://127.0.0.1:9/v1", "m", role="judge", timeout=2).generate(
            [[{"role": "user", "content": "Hi"}]], 1, Sampling()
        )


def test_a_tiny_model_trains_end_to_end_on_retail_conversations(tmp_path, tiny_qwen3, tau2_data):
    import json

    from conftest import rwml_lite, tiny_recipe

    recipe = tiny_recipe(
        tmp_path, tiny_qwen3,
        model={"max_seq_length": 8192},
        env={"name": "tau2", "domains": ["retail"], "workers": 0, "user_max_new_tokens": 16},
        agent={"action_parse": "mention", "history": 2},
        collect={"split": "train", "num_tasks": 2, "rollouts_per_task": 2, "max_steps": 3},
        worldmodel={"history": 2},
        eval={"splits": ["test"], "num_tasks": 1, "runs": 1, "max_steps": 3, "temperature": 1.0},
    )  # fmt: skip
    result = rwml_lite("train", str(recipe))
    assert result.returncode == 0, result.stderr[-3000:]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "tau2 pass rate % by domain" in report and "| retail | AVG |" in report
    episodes = [json.loads(line) for line in (tmp_path / "run" / "rollouts.jsonl").read_text().splitlines()]
    assert len(episodes) == 4 and all(
        s["kind"] in ("user", "tool", "observation") for e in episodes for s in e["steps"]
    )
