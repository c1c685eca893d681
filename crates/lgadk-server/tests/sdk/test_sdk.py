"""The official `langgraph-sdk` client against an lgadk server.

Run by `crates/lgadk-server/tests/langgraph_sdk.rs`, which starts the server on a free loopback
port with three assistants and three API keys, then runs this script with the venv that
`cargo xtask test` makes (`target/sdk-venv`, pinned in `requirements.txt`):

- `agent`: the seed's conversational assistant on the offline model;
- `approvals`: a tool loop whose `save_note` tool needs a person's approval (the offline model
  calls it when a message contains the word "note");
- `slow`: one node that takes about half a second, so that a second run can meet a busy thread.

Every check uses only the client's public API (plus `client.http` for lgadk's own analytics
route), and each prints one line. The script exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import sys
import threading
import traceback
import uuid
from typing import Any, Callable

import httpx
from langgraph_sdk import get_sync_client
from langgraph_sdk.schema import Command

CHECKS: list[tuple[str, Callable[["Ctx"], None]]] = []


def check(fn: Callable[["Ctx"], None]) -> Callable[["Ctx"], None]:
    CHECKS.append((fn.__name__, fn))
    return fn


class Ctx:
    def __init__(self, url: str, alice: str, bob: str, admin: str) -> None:
        self.url = url
        self.alice = get_sync_client(url=url, api_key=alice)
        self.bob = get_sync_client(url=url, api_key=bob)
        self.admin = get_sync_client(url=url, api_key=admin)
        self.tag = uuid.uuid4().hex

    def thread(self, **metadata: Any) -> str:
        """A new thread of alice's, tagged with this run's tag."""
        thread = self.alice.threads.create(metadata={"suite": self.tag, **metadata})
        return thread["thread_id"]


def refused(status: int, call: Callable[[], Any], why: str) -> None:
    """`call` fails with HTTP `status` (the client raises `httpx.HTTPStatusError` or its typed
    subclasses, depending on the route)."""
    try:
        call()
    except httpx.HTTPStatusError as err:
        assert err.response.status_code == status, f"{why}: got {err.response.status_code}, not {status}"
        body = err.response.json()
        assert isinstance(body.get("detail"), str), f"{why}: error body {body!r}"
        return
    raise AssertionError(f"{why}: the call succeeded")


def human(content: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}]}


def messages_of(values: Any) -> list[dict[str, Any]]:
    assert isinstance(values, dict), f"values should be a dict, got {values!r}"
    messages = values.get("messages")
    assert isinstance(messages, list), f"values should hold a list of messages: {values!r}"
    return messages


def assert_message_dict(message: dict[str, Any]) -> None:
    """The LangChain message dict shape that UIs built for LangGraph render."""
    assert message.get("type") in {"human", "ai", "tool", "system"}, message
    assert isinstance(message.get("content"), (str, list)), message
    assert isinstance(message.get("id"), str) and message["id"], message
    if message["type"] == "ai":
        assert isinstance(message.get("tool_calls", []), list), message
    if message["type"] == "tool":
        assert isinstance(message.get("tool_call_id"), str), message


def last_ai(values: Any) -> dict[str, Any]:
    messages = messages_of(values)
    assert messages and messages[-1]["type"] == "ai", f"the last message should be the AI's: {messages!r}"
    return messages[-1]


def interrupts_of(state: dict[str, Any]) -> list[dict[str, Any]]:
    """A thread state's interrupts: top-level, or on its tasks."""
    found = list(state.get("interrupts") or [])
    for task in state.get("tasks") or []:
        found.extend(task.get("interrupts") or [])
    return found


# ---------------------------------------------------------------------------------------------
# Assistants.


@check
def assistants_search_and_get(ctx: Ctx) -> None:
    found = ctx.alice.assistants.search()
    by_graph = {a["graph_id"]: a for a in found}
    assert {"agent", "approvals", "slow"} <= set(by_graph), f"assistants: {found!r}"
    agent = ctx.alice.assistants.get(by_graph["agent"]["assistant_id"])
    assert agent["graph_id"] == "agent", agent
    limited = ctx.alice.assistants.search(limit=1)
    assert len(limited) == 1, limited
    refused(404, lambda: ctx.alice.assistants.get(str(uuid.uuid4())), "an unknown assistant")


# ---------------------------------------------------------------------------------------------
# Threads.


@check
def threads_create_get_update_delete(ctx: Ctx) -> None:
    tid = ctx.thread(a=1)
    thread = ctx.alice.threads.get(tid)
    assert thread["thread_id"] == tid, thread
    assert thread["metadata"].get("a") == 1, thread
    assert thread["status"] == "idle", thread
    updated = ctx.alice.threads.update(tid, metadata={"b": 2})
    assert updated["metadata"].get("a") == 1 and updated["metadata"].get("b") == 2, updated
    assert ctx.alice.threads.get(tid)["metadata"].get("b") == 2
    ctx.alice.threads.delete(tid)
    refused(404, lambda: ctx.alice.threads.get(tid), "a deleted thread")


@check
def threads_create_with_id_and_if_exists(ctx: Ctx) -> None:
    tid = str(uuid.uuid4())
    created = ctx.alice.threads.create(thread_id=tid, metadata={"suite": ctx.tag, "first": True})
    assert created["thread_id"] == tid, created
    again = ctx.alice.threads.create(thread_id=tid, if_exists="do_nothing", metadata={"second": True})
    assert again["thread_id"] == tid and again["metadata"].get("first") is True, again
    assert "second" not in again["metadata"], again
    refused(409, lambda: ctx.alice.threads.create(thread_id=tid, if_exists="raise"), "if_exists=raise")


@check
def threads_search_by_metadata_with_pages(ctx: Ctx) -> None:
    tag = uuid.uuid4().hex
    made = {ctx.thread(page=tag) for _ in range(3)}
    found = ctx.alice.threads.search(metadata={"page": tag}, limit=10)
    assert {t["thread_id"] for t in found} == made, found
    first = ctx.alice.threads.search(metadata={"page": tag}, limit=2, offset=0)
    rest = ctx.alice.threads.search(metadata={"page": tag}, limit=2, offset=2)
    assert len(first) == 2 and len(rest) == 1, (first, rest)
    assert {t["thread_id"] for t in first + rest} == made
    assert ctx.alice.threads.search(metadata={"page": "no such tag " + tag}) == []


# ---------------------------------------------------------------------------------------------
# Runs.


@check
def runs_wait_returns_the_final_state(ctx: Ctx) -> None:
    tid = ctx.thread()
    values = ctx.alice.runs.wait(tid, "agent", input=human("Hello, who are you?"))
    messages = messages_of(values)
    for message in messages:
        assert_message_dict(message)
    assert [m["type"] for m in messages] == ["human", "ai"], messages
    assert messages[0]["content"] == "Hello, who are you?"
    assert last_ai(values)["content"], values
    # A second turn continues the same conversation.
    values = ctx.alice.runs.wait(tid, "agent", input={"messages": [{"type": "human", "content": "And again"}]})
    assert [m["type"] for m in messages_of(values)] == ["human", "ai", "human", "ai"], values
    state = ctx.alice.threads.get_state(tid)
    assert messages_of(state["values"]) == messages_of(values), state


@check
def stream_values(ctx: Ctx) -> None:
    tid = ctx.thread()
    parts = list(ctx.alice.runs.stream(tid, "agent", input=human("Stream me values"), stream_mode="values"))
    assert parts and parts[0].event == "metadata" and parts[0].data.get("run_id"), parts[:1]
    values = [p.data for p in parts if p.event == "values"]
    assert values, [p.event for p in parts]
    assert not [p for p in parts if p.event == "error"], parts
    assert messages_of(values[0])[0]["content"] == "Stream me values"
    final = values[-1]
    assert last_ai(final)["content"]
    assert messages_of(ctx.alice.threads.get_state(tid)["values"]) == messages_of(final)


@check
def stream_updates(ctx: Ctx) -> None:
    tid = ctx.thread()
    parts = list(ctx.alice.runs.stream(tid, "agent", input=human("Stream me updates"), stream_mode="updates"))
    assert parts[0].event == "metadata", parts[:1]
    updates = [p.data for p in parts if p.event == "updates"]
    assert updates, [p.event for p in parts]
    for update in updates:
        assert isinstance(update, dict) and update, update
    produced = [m for u in updates for node in u.values() if isinstance(node, dict) for m in node.get("messages", [])]
    assert any(m.get("type") == "ai" for m in produced), updates


@check
def stream_messages(ctx: Ctx) -> None:
    tid = ctx.thread()
    parts = list(ctx.alice.runs.stream(tid, "agent", input=human("Stream me tokens"), stream_mode="messages-tuple"))
    assert parts[0].event == "metadata", parts[:1]
    chunks = [p.data for p in parts if p.event == "messages"]
    assert chunks, [p.event for p in parts]
    for chunk in chunks:
        assert isinstance(chunk, list) and len(chunk) == 2, chunk
        message, metadata = chunk
        assert message.get("type") in {"AIMessageChunk", "ai"}, message
        assert isinstance(metadata, dict), metadata
    text = "".join(c[0]["content"] for c in chunks if isinstance(c[0].get("content"), str))
    final = last_ai(ctx.alice.threads.get_state(tid)["values"])
    assert text == final["content"], (text, final)


@check
def stream_several_modes_at_once(ctx: Ctx) -> None:
    tid = ctx.thread()
    parts = list(
        ctx.alice.runs.stream(
            tid, "agent", input=human("All of it"), stream_mode=["values", "updates", "messages-tuple"]
        )
    )
    events = [p.event for p in parts]
    assert events[0] == "metadata", events
    assert {"values", "updates", "messages"} <= set(events), events


@check
def runs_create_join_get_list(ctx: Ctx) -> None:
    tid = ctx.thread()
    run = ctx.alice.runs.create(tid, "agent", input=human("In the background"))
    assert run["run_id"] and run["thread_id"] == tid, run
    assert run["status"] in {"pending", "running", "success"}, run
    values = ctx.alice.runs.join(tid, run["run_id"])
    assert last_ai(values)["content"], values
    got = ctx.alice.runs.get(tid, run["run_id"])
    assert got["status"] == "success", got
    listed = ctx.alice.runs.list(tid)
    assert run["run_id"] in {r["run_id"] for r in listed}, listed


@check
def runs_join_stream_of_a_background_run(ctx: Ctx) -> None:
    tid = ctx.thread()
    run = ctx.alice.runs.create(tid, "slow", input=human("join my stream"), stream_mode=["values"])
    parts = list(ctx.alice.runs.join_stream(tid, run["run_id"]))
    values = [p.data for p in parts if p.event == "values"]
    assert values and last_ai(values[-1])["content"], [p.event for p in parts]
    assert ctx.alice.runs.get(tid, run["run_id"])["status"] == "success"


@check
def a_second_run_on_a_busy_thread_is_rejected(ctx: Ctx) -> None:
    tid = ctx.thread()
    first = ctx.alice.runs.create(tid, "slow", input=human("first"))
    refused(
        409,
        lambda: ctx.alice.runs.create(tid, "slow", input=human("second"), multitask_strategy="reject"),
        "a second run on a busy thread",
    )
    values = ctx.alice.runs.join(tid, first["run_id"])
    assert [m["content"] for m in messages_of(values) if m["type"] == "human"] == ["first"], values


@check
def enqueued_runs_run_in_order(ctx: Ctx) -> None:
    tid = ctx.thread()
    first = ctx.alice.runs.create(tid, "slow", input=human("one"))
    second = ctx.alice.runs.create(tid, "slow", input=human("two"), multitask_strategy="enqueue")
    third = ctx.alice.runs.create(tid, "slow", input=human("three"), multitask_strategy="enqueue")
    values = ctx.alice.runs.join(tid, third["run_id"])
    said = [m["content"] for m in messages_of(values) if m["type"] == "human"]
    assert said == ["one", "two", "three"], values
    for run in (first, second, third):
        assert ctx.alice.runs.get(tid, run["run_id"])["status"] == "success"


@check
def cancel_a_running_run(ctx: Ctx) -> None:
    tid = ctx.thread()
    ctx.alice.runs.wait(tid, "agent", input=human("before"))
    before = messages_of(ctx.alice.threads.get_state(tid)["values"])
    run = ctx.alice.runs.create(tid, "slow", input=human("cancel me"))
    ctx.alice.runs.cancel(tid, run["run_id"], wait=True)
    got = ctx.alice.runs.get(tid, run["run_id"])
    assert got["status"] in {"interrupted", "success"}, got
    after = messages_of(ctx.alice.threads.get_state(tid)["values"])
    if got["status"] == "interrupted":
        # Nothing half-written: the cancelled turn left the conversation as it was.
        assert after == before, (before, after)
    assert ctx.alice.threads.get(tid)["status"] == "idle"


@check
def interrupt_then_resume_with_a_command(ctx: Ctx) -> None:
    tid = ctx.thread()
    values = ctx.alice.runs.wait(tid, "approvals", input=human("note buy oat milk"))
    thread = ctx.alice.threads.get(tid)
    assert thread["status"] == "interrupted", thread
    state = ctx.alice.threads.get_state(tid)
    interrupts = interrupts_of(state)
    assert interrupts, state
    request = interrupts[0]["value"]
    assert request["type"] == "tool_approval", request
    pending = request["pending"]
    assert [p["name"] for p in pending] == ["save_note"], pending
    if isinstance(values, dict) and "__interrupt__" in values:
        assert values["__interrupt__"][0]["value"] == request
    resumed = ctx.alice.runs.wait(
        tid, "approvals", command=Command(resume={pending[0]["call_id"]: {"decision": "approve"}})
    )
    messages = messages_of(resumed)
    tools = [m for m in messages if m["type"] == "tool"]
    assert [m["tool_call_id"] for m in tools] == [pending[0]["call_id"]], messages
    calls = [c for m in messages if m["type"] == "ai" for c in m.get("tool_calls") or []]
    assert calls and calls[0]["name"] == "save_note" and calls[0]["id"] == pending[0]["call_id"], calls
    assert isinstance(calls[0]["args"], dict), calls
    assert last_ai(resumed)["content"]
    assert ctx.alice.threads.get(tid)["status"] == "idle"
    assert not interrupts_of(ctx.alice.threads.get_state(tid))


@check
def state_history_and_update(ctx: Ctx) -> None:
    tid = ctx.thread()
    ctx.alice.runs.wait(tid, "agent", input=human("first turn"))
    ctx.alice.runs.wait(tid, "agent", input=human("second turn"))
    state = ctx.alice.threads.get_state(tid)
    assert state["checkpoint"]["checkpoint_id"], state
    history = ctx.alice.threads.get_history(tid, limit=10)
    assert len(history) >= 2, history
    assert history[0]["checkpoint"]["checkpoint_id"] == state["checkpoint"]["checkpoint_id"], history[0]
    lengths = [len(messages_of(h["values"])) for h in history]
    assert lengths == sorted(lengths, reverse=True), lengths
    assert len(ctx.alice.threads.get_history(tid, limit=1)) == 1
    # An update appends through the messages reducer and makes a new checkpoint.
    updated = ctx.alice.threads.update_state(tid, {"messages": [{"role": "user", "content": "added by hand"}]})
    assert updated["checkpoint"]["checkpoint_id"] != state["checkpoint"]["checkpoint_id"], updated
    after = messages_of(ctx.alice.threads.get_state(tid)["values"])
    assert after[-1]["content"] == "added by hand" and len(after) == len(messages_of(state["values"])) + 1, after


@check
def analytics_extension(ctx: Ctx) -> None:
    tid = ctx.thread()
    ctx.alice.runs.wait(tid, "agent", input=human("count this"))
    ctx.alice.runs.wait(tid, "agent", input=human("and this"))
    analytics = ctx.alice.http.get(f"/threads/{tid}/analytics")
    assert analytics["interactions"] == 2, analytics
    assert analytics["total_tokens_in"] > 0 and analytics["total_tokens_out"] > 0, analytics
    mine = ctx.alice.http.get("/users/me/analytics")
    assert mine["interactions"] >= 2 and mine["threads"] >= 1, mine
    refused(404, lambda: ctx.bob.http.get(f"/threads/{tid}/analytics"), "another user's analytics")


# ---------------------------------------------------------------------------------------------
# Who sees what.


@check
def threads_belong_to_their_user(ctx: Ctx) -> None:
    tid = ctx.thread(private=True)
    ctx.alice.runs.wait(tid, "agent", input=human("mine"))
    for attempt in (
        lambda: ctx.bob.threads.get(tid),
        lambda: ctx.bob.threads.get_state(tid),
        lambda: ctx.bob.threads.update(tid, metadata={"stolen": True}),
        lambda: ctx.bob.runs.wait(tid, "agent", input=human("let me in")),
        lambda: ctx.bob.threads.delete(tid),
    ):
        refused(404, attempt, "another user's thread")
    assert tid not in {t["thread_id"] for t in ctx.bob.threads.search(metadata={"suite": ctx.tag})}
    # The admin key reaches any thread by id.
    assert ctx.admin.threads.get(tid)["thread_id"] == tid
    assert messages_of(ctx.admin.threads.get_state(tid)["values"])
    # Alice's thread is untouched by bob's attempts.
    thread = ctx.alice.threads.get(tid)
    assert "stolen" not in thread["metadata"], thread
    assert len(messages_of(ctx.alice.threads.get_state(tid)["values"])) == 2


@check
def no_key_or_a_wrong_key_is_401(ctx: Ctx) -> None:
    for key in (None, "not-a-key-" + uuid.uuid4().hex):
        client = get_sync_client(url=ctx.url, api_key=key)
        refused(401, client.threads.search, f"key {key!r}")


@check
def concurrent_streams_on_separate_threads(ctx: Ctx) -> None:
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            tid = ctx.thread()
            parts = list(ctx.alice.runs.stream(tid, "agent", input=human(f"parallel {i}"), stream_mode="values"))
            assert parts[0].event == "metadata"
            assert last_ai([p.data for p in parts if p.event == "values"][-1])["content"]
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--alice-key", required=True)
    parser.add_argument("--bob-key", required=True)
    parser.add_argument("--admin-key", required=True)
    parser.add_argument("--only", help="run only the checks whose name contains this")
    args = parser.parse_args()
    ctx = Ctx(args.url, args.alice_key, args.bob_key, args.admin_key)
    failed = []
    for name, fn in CHECKS:
        if args.only and args.only not in name:
            continue
        try:
            fn(ctx)
            print(f"ok     {name}", flush=True)
        except Exception:  # noqa: BLE001 - every failure is reported, then the script fails
            failed.append(name)
            print(f"FAILED {name}\n{traceback.format_exc()}", flush=True)
    print(f"{len(CHECKS) - len(failed)} passed, {len(failed)} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
