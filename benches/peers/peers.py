"""The peers of lgadk's bench groups, measured on the same workloads in the same run.

`cargo xtask bench --peers` runs this script in `target/peers-venv` (the pinned packages of
`requirements.txt`) after the Rust groups and renders what it writes next to their results:

- LangGraph + InMemorySaver, mirroring `graph_overhead`: one turn of a one-node graph whose
  zero-cost model appends the user's message and a fixed answer (a first turn on a saver that
  already holds 1024 threads, and a turn on a thread with 10, 100 and 200 earlier turns, each
  timed turn on its own thread copied from a template with `update_state`), and the per-node
  cost of a 100-node chain and of 50 layers of a 10-way conditional router (100 nodes run per
  invoke, no checkpointer).
- LangGraph + `PostgresSaver` (langgraph-checkpoint-postgres over psycopg), mirroring
  `postgres_store`'s graph turn: turn 1 of a new thread and turn 100 of a thread, the same
  one-node zero-cost graph, on a throwaway PostgreSQL started the way the Rust bench starts
  its own (`initdb`, a free loopback port, `fsync` off; as the `postgres` user when run as
  root). Skipped, with a note, where PostgreSQL is not installed.
- LangGraph's own server (`langgraph dev` from `langgraph-cli[inmem]`: langgraph-api over the
  in-memory runtime, telemetry and version checks off) serving a one-node graph that appends a
  fixed answer, against the `lgadk-server` binary serving its offline assistant (one node),
  both driven by the same `langgraph-sdk` async client: 16 concurrent clients (4 processes of
  4), each creating a thread and waiting for one run on it, over and over. Reported: runs per
  second, and the server process's CPU time per run. Skipped, with a note, without
  `LGADK_SERVER_BIN` (the release binary `cargo xtask bench --peers` builds).
- Google ADK's `InMemorySessionService`, mirroring `session_concurrency` (10k sessions of 100
  users): `create_session` for 10k distinct users, `get_session`, and `append_event` (one
  event carrying the turn's token counts: what `track_interaction` records) at 1 and 2 OS
  threads, each thread running its own asyncio loop over the one shared service, as lgadk's
  workers each run their own current-thread runtime.

Output: the bench harness's results format (see `benches/support/mod.rs`), group `peers`, plus
`compare` lines naming the lgadk cell each peer cell is set against:

    compare <workload> <lgadk group> <lgadk table> <lgadk row> <lgadk series> <table> <row> <series>

Values are nanoseconds per operation (per node for the per-node rows): the median of the
samples' averages. `--quick` takes fewer samples and operations, never smaller workloads (the
Rust groups keep these sizes in quick runs too).
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import platform
import shutil
import socket
import statistics
import subprocess
import tempfile
import sys
import threading
import time
import uuid
from importlib.metadata import version
from typing import Annotated, Any, Callable, TypedDict

from google.adk.events import Event
from google.adk.sessions import InMemorySessionService
from google.genai import types as genai_types
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

# lgadk's side of each comparison: groups, tables, rows and series as the Rust benches name them.
TURN_ROWS = {
    0: ["first turn (new session, cache full)"],
    10: ["10 earlier turns (cached state)"],
    100: ["100 earlier turns (cached state)"],
    200: ["200 earlier turns (cached state)", "200 earlier turns (cache off)"],
}
LGADK_TURN = ("graph_overhead", "turn", "graph turn")
LGADK_NODE = ("graph_overhead", "per_node", "graph")
LGADK_STORE_SERIES = "SessionManager"
LGADK_PG_TURN = ("postgres_store", "graph_turn", "PostgresStore")
# lgadk's graph cache capacity (`DEFAULT_CACHE_CAPACITY`): its first-turn row runs on a graph
# that has served this many sessions, so the saver here holds as many threads.
SERVED_THREADS = 1024
SESSIONS = 10_000
USERS = 100
APP = "bench"


class Out:
    """The results file: tab-separated lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def line(self, *fields: object) -> None:
        self.lines.append("\t".join(str(f).replace("\t", " ").replace("\n", " ") for f in fields))

    def result(self, table: str, row: str, series: str, ns: float) -> None:
        self.line("result", table, row, series, f"{ns:.3f}")


def median_ns(samples: int, run: Callable[[], float]) -> float:
    """Median over `samples` calls of `run`, which returns ns per operation, after one
    untimed call (imports, lazily built validators and caches warm up in the first one)."""
    run()
    return statistics.median(run() for _ in range(samples))


# --- LangGraph ------------------------------------------------------------------------------


class State(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    input: str
    output: str


def zero_cost_model(state: State) -> dict[str, Any]:
    return {"messages": [HumanMessage(state["input"]), AIMessage("ok")], "output": "ok"}


def noop(_state: State) -> dict[str, Any]:
    return {}


def turn_graph():
    graph = StateGraph(State)
    graph.add_node("model", zero_cost_model)
    graph.add_edge(START, "model")
    graph.add_edge("model", END)
    return graph.compile(checkpointer=InMemorySaver())


def thread(thread_id: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id}}


def langgraph_turns(out: Out, quick: bool) -> None:
    series = f"LangGraph {version('langgraph')} + InMemorySaver"
    table = "langgraph/turn"
    out.line(
        "table",
        table,
        "LangGraph + InMemorySaver: one turn of a one-node graph (zero-cost model)",
        "time",
        "rows: the thread's history; each timed turn runs on its own thread",
    )
    samples = 3 if quick else 10
    graph = turn_graph()
    for _ in range(SERVED_THREADS):
        graph.invoke({"input": "hello"}, thread(str(uuid.uuid4())))

    def first() -> float:
        n = 30 if quick else 100
        ids = [str(uuid.uuid4()) for _ in range(n)]
        start = time.perf_counter_ns()
        for tid in ids:
            graph.invoke({"input": "hello"}, thread(tid))
        return (time.perf_counter_ns() - start) / n

    out.result(table, "first turn (new thread)", series, median_ns(samples, first))
    for history in (10, 100, 200):
        template = str(uuid.uuid4())
        graph.invoke({"input": "hello"}, thread(template))
        for k in range(1, history):
            graph.invoke({"input": f"message {k}"}, thread(template))
        values = graph.get_state(thread(template)).values
        assert len(values["messages"]) == 2 * history

        def turn() -> float:
            n = 10 if quick else 30
            ids = [str(uuid.uuid4()) for _ in range(n)]
            for tid in ids:
                graph.update_state(thread(tid), values, as_node="model")
            start = time.perf_counter_ns()
            for tid in ids:
                graph.invoke({"input": "and now?"}, thread(tid))
            return (time.perf_counter_ns() - start) / n

        out.result(table, f"{history} earlier turns", series, median_ns(samples, turn))
    for history, rows in TURN_ROWS.items():
        peer_row = "first turn (new thread)" if history == 0 else f"{history} earlier turns"
        for row in rows:
            group, lg_table, lg_series = LGADK_TURN
            workload = f"one turn, {'first' if history == 0 else f'{history} earlier turns'}"
            if "cache off" in row:
                workload += " (lgadk cache off)"
            out.line("compare", workload, group, lg_table, row, lg_series, table, peer_row, series)


def postgres_bin_dir() -> str | None:
    """Where `initdb` and `pg_ctl` are, as the Rust harness looks for them."""
    candidates = [os.environ.get("LGADK_PG_BIN", "")]
    try:
        candidates.append(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True).stdout.strip())
    except OSError:
        pass
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for directory in candidates:
        if directory and os.path.isfile(os.path.join(directory, "initdb")):
            return directory
    return None


class ThrowawayPostgres:
    """`initdb` into a temporary directory, `pg_ctl start` on a free loopback port (never
    5432), stopped immediately and removed on exit."""

    def __init__(self, bindir: str) -> None:
        self.bindir = bindir
        self.root = os.geteuid() == 0
        self.dir = tempfile.mkdtemp(prefix="lgadk-peer-pg-")
        if self.root:
            shutil.chown(self.dir, "postgres")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.data = os.path.join(self.dir, "data")

    def run(self, *args: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self.root else []
        subprocess.run(prefix + list(args), check=True, capture_output=True)

    def __enter__(self) -> str:
        self.run(os.path.join(self.bindir, "initdb"), "-D", self.data, "-A", "trust", "-U", "lgadk", "-E", "UTF8",
                 "--locale=C", "--no-sync")
        options = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off")
        self.run(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-o", options, "-l",
                 os.path.join(self.dir, "log"), "-w", "start")
        return f"postgresql://lgadk@127.0.0.1:{self.port}/postgres"

    def __exit__(self, *_: object) -> None:
        try:
            self.run(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def langgraph_postgres(out: Out, quick: bool) -> None:
    bindir = postgres_bin_dir()
    if bindir is None:
        out.line("note", "LangGraph + PostgresSaver not run: PostgreSQL (initdb) not found.")
        return
    from langgraph.checkpoint.postgres import PostgresSaver
    from psycopg import Connection

    series = f"LangGraph {version('langgraph')} + PostgresSaver {version('langgraph-checkpoint-postgres')}"
    table = "langgraph/postgres_turn"
    out.line(
        "table",
        table,
        "LangGraph + PostgresSaver: one turn of a one-node graph (zero-cost model), median",
        "time",
        "rows: the turn's place in its thread; one connection (autocommit, as its docs set it up)",
    )
    samples = 5 if quick else 20
    with ThrowawayPostgres(bindir) as url, Connection.connect(url, autocommit=True, prepare_threshold=0) as conn:
        saver = PostgresSaver(conn)
        saver.setup()
        graph = StateGraph(State)
        graph.add_node("model", zero_cost_model)
        graph.add_edge(START, "model")
        graph.add_edge("model", END)
        graph = graph.compile(checkpointer=saver)
        warm = str(uuid.uuid4())
        graph.invoke({"input": "hello"}, thread(warm))
        graph.invoke({"input": "again"}, thread(warm))
        first, hundredth = [], []
        for _ in range(samples):
            tid = str(uuid.uuid4())
            start = time.perf_counter_ns()
            graph.invoke({"input": "turn 1"}, thread(tid))
            first.append(time.perf_counter_ns() - start)
            for n in range(2, 100):
                graph.invoke({"input": f"turn {n}"}, thread(tid))
            start = time.perf_counter_ns()
            graph.invoke({"input": "turn 100"}, thread(tid))
            hundredth.append(time.perf_counter_ns() - start)
    group, lg_table, lg_series = LGADK_PG_TURN
    for row, lg_row, values in (
        ("turn 1 (new thread)", "turn 1 (creates the session)", first),
        ("turn 100", "turn 100", hundredth),
    ):
        out.result(table, row, series, statistics.median(values))
        out.line("compare", f"graph turn on PostgreSQL, {row}", group, lg_table, lg_row, lg_series, table, row, series)


def chain_graph(nodes: int):
    graph = StateGraph(State)
    for n in range(nodes):
        graph.add_node(f"n{n}", noop)
        graph.add_edge(f"n{n}", END if n + 1 == nodes else f"n{n + 1}")
    graph.add_edge(START, "n0")
    return graph.compile()


def router_graph(layers: int):
    graph = StateGraph(State)
    graph.add_edge(START, "r0")
    for layer in range(layers):
        chosen = (layer * 7) % 10
        after = END if layer + 1 == layers else f"r{layer + 1}"
        graph.add_node(f"r{layer}", noop)
        graph.add_conditional_edges(
            f"r{layer}",
            lambda _state, chosen=chosen: str(chosen),
            {str(k): f"w{layer}_{k}" for k in range(10)},
        )
        for k in range(10):
            graph.add_node(f"w{layer}_{k}", noop)
            graph.add_edge(f"w{layer}_{k}", after)
    return graph.compile()


def langgraph_nodes(out: Out, quick: bool) -> None:
    series = f"LangGraph {version('langgraph')}"
    table = "langgraph/per_node"
    out.line(
        "table",
        table,
        "LangGraph: per-node cost of invoke (no checkpointer)",
        "time",
        "time per node run; rows: graph shape (100 nodes run per invoke)",
    )
    samples = 3 if quick else 10
    for row, graph in [("100-node chain", chain_graph(100)), ("10-way router × 50 layers", router_graph(50))]:
        config = {"recursion_limit": 250}
        graph.invoke({"input": ""}, config)

        def run(graph=graph, config=config) -> float:
            n = 5 if quick else 20
            start = time.perf_counter_ns()
            for _ in range(n):
                graph.invoke({"input": ""}, config)
            return (time.perf_counter_ns() - start) / (n * 100)

        out.result(table, row, series, median_ns(samples, run))
        group, lg_table, lg_series = LGADK_NODE
        out.line("compare", f"per node, {row}", group, lg_table, row, lg_series, table, row, series)


# --- Google ADK -----------------------------------------------------------------------------


def index(worker: int, i: int, length: int) -> int:
    """The key lgadk's session_concurrency workers address: far apart, then in order."""
    return (worker * 7919 + i) % length


def run_threads(threads: int, total: int, work: Callable[[int, int], Any]) -> float:
    """`total` operations over `threads` OS threads, each running its share on its own asyncio
    loop (`work(worker, n)` returns the coroutine); returns ns per operation.

    Each thread reads the clock itself, just before and after its share: the wall time is from
    the first start to the last end. (A timer in the main thread would start late: whichever
    thread leaves the barrier first holds the GIL for a whole switch interval.)
    """
    barrier = threading.Barrier(threads)
    spans: list[tuple[int, int]] = []

    def body(worker: int) -> None:
        n = total // threads + (1 if worker < total % threads else 0)
        loop = asyncio.new_event_loop()
        coroutine = work(worker, n)
        barrier.wait()
        start = time.perf_counter_ns()
        loop.run_until_complete(coroutine)
        spans.append((start, time.perf_counter_ns()))
        loop.close()

    workers = [threading.Thread(target=body, args=(w,)) for w in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if len(spans) != threads:
        raise RuntimeError("a worker thread failed")
    return (max(end for _, end in spans) - min(start for start, _ in spans)) / total


def adk_store(out: Out, quick: bool) -> None:
    series = f"ADK {version('google-adk')} InMemorySessionService"
    samples = 3 if quick else 10
    ops = 2_000 if quick else 10_000
    ids = [f"session-{n:05}" for n in range(SESSIONS)]
    owners = [f"user-{n % USERS:05}" for n in range(SESSIONS)]
    new_users = [f"user-{n:05}" for n in range(SESSIONS)]

    def filled() -> tuple[InMemorySessionService, list[Any]]:
        service = InMemorySessionService()

        async def fill() -> list[Any]:
            return [
                await service.create_session(app_name=APP, user_id=owners[n], session_id=ids[n])
                for n in range(SESSIONS)
            ]

        return service, asyncio.run(fill())

    service, sessions = filled()

    def create(threads: int) -> float:
        fresh = InMemorySessionService()

        async def work(worker: int, n: int) -> None:
            for i in range(n):
                await fresh.create_session(app_name=APP, user_id=new_users[index(worker, i, SESSIONS)])

        return run_threads(threads, ops, work)

    def get(threads: int) -> float:
        async def work(worker: int, n: int) -> None:
            for i in range(n):
                k = index(worker, i, SESSIONS)
                session = await service.get_session(app_name=APP, user_id=owners[k], session_id=ids[k])
                assert session is not None

        return run_threads(threads, ops, work)

    def append(threads: int) -> float:
        async def work(worker: int, n: int) -> None:
            for i in range(n):
                session = sessions[index(worker, i, SESSIONS)]
                event = Event(
                    id=Event.new_id(),
                    invocation_id="turn",
                    author="model",
                    usage_metadata=genai_types.GenerateContentResponseUsageMetadata(
                        prompt_token_count=3, candidates_token_count=5
                    ),
                )
                await service.append_event(session, event)

        return run_threads(threads, ops, work)

    cases = [
        ("create_session", "create_session/10k/tasks", "create_session for 10k distinct users", create),
        ("get_session", "get_session/10k/tasks", "get_session over 10k sessions", get),
        ("append_event", "track_interaction/10k/tasks", "append_event (the turn's token counts) over 10k sessions", append),
    ]
    for name, lg_table, title, run in cases:
        table = f"adk/{name}"
        out.line(
            "table",
            table,
            f"ADK InMemorySessionService: {title}",
            "throughput",
            "rows: OS threads, each with its own asyncio loop, sharing one service",
        )
        for threads in (1, 2):
            out.result(table, str(threads), series, median_ns(samples, lambda: run(threads)))
            workload = f"{lg_table.split('/')[0]}, 10k sessions, {threads} worker{'s' if threads > 1 else ''}"
            if name == "append_event":
                workload += " (ADK: append_event)"
            out.line("compare", workload, "session_concurrency", lg_table, str(threads), LGADK_STORE_SERIES,
                     table, str(threads), series)


# --- LangGraph's server against lgadk-server, through the same client --------------------------

SERVER_CLIENTS = 16
SERVER_PROCESSES = 4
SERVER_GRAPH = """
from typing import Annotated, TypedDict

from langchain_core.messages import AIMessage, AnyMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def assistant(state: State) -> dict:
    return {"messages": [AIMessage("ok")]}


builder = StateGraph(State)
builder.add_node("assistant", assistant)
builder.add_edge(START, "assistant")
builder.add_edge("assistant", END)
graph = builder.compile()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ok(url: str, proc: subprocess.Popen, seconds: float) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/ok", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url}/ok did not answer within {seconds:.0f} s")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of `pid` and of its live children."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as file:
                fields = file.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def drive(url: str, clients: int, seconds: float) -> int:
    """One client process: `clients` concurrent clients for `seconds`; returns the runs done."""
    from langgraph_sdk import get_client

    async def run() -> int:
        client = get_client(url=url, api_key=None)
        stop = time.monotonic() + seconds
        done = 0

        async def one() -> None:
            nonlocal done
            while time.monotonic() < stop:
                created = await client.threads.create()
                values = await client.runs.wait(
                    created["thread_id"], "agent", input={"messages": [{"role": "user", "content": "hello"}]}
                )
                assert values["messages"][-1]["type"] == "ai", values
                done += 1

        await asyncio.gather(*(one() for _ in range(clients)))
        return done

    return asyncio.run(run())


def measure_server(url: str, proc: subprocess.Popen, seconds: float) -> tuple[float, float]:
    """Runs per second and server CPU seconds per run, from SERVER_PROCESSES client processes."""
    from concurrent.futures import ProcessPoolExecutor

    per_process = SERVER_CLIENTS // SERVER_PROCESSES
    with ProcessPoolExecutor(SERVER_PROCESSES) as pool:
        # A short warm-up round: imports, connections, the server's lazy start-up.
        list(pool.map(drive, [url] * SERVER_PROCESSES, [per_process] * SERVER_PROCESSES, [1.0] * SERVER_PROCESSES))
        cpu_before = cpu_seconds(proc.pid)
        start = time.perf_counter()
        runs = sum(pool.map(drive, [url] * SERVER_PROCESSES, [per_process] * SERVER_PROCESSES, [seconds] * SERVER_PROCESSES))
        elapsed = time.perf_counter() - start
        cpu = cpu_seconds(proc.pid) - cpu_before
    return runs / elapsed, cpu / max(runs, 1)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def server_peer(out: Out, quick: bool) -> None:
    binary = os.environ.get("LGADK_SERVER_BIN")
    if not binary or not os.path.exists(binary):
        out.line("note", "LangGraph's server vs lgadk-server not run: LGADK_SERVER_BIN is not set to the release binary.")
        return
    cli = shutil.which("langgraph", path=os.path.dirname(sys.executable))
    if cli is None:
        out.line("note", "LangGraph's server not run: the `langgraph` command of langgraph-cli is not in the venv.")
        return
    seconds = 5.0 if quick else 15.0
    table = "server/clients"
    out.line(
        "table",
        table,
        f"create a thread + one run (runs.wait) through langgraph-sdk, {SERVER_CLIENTS} concurrent clients",
        "throughput",
        f"{SERVER_CLIENTS} clients in {SERVER_PROCESSES} processes, {seconds:.0f} s; one-node graph appending a fixed answer",
    )
    cpu_table = "server/cpu"
    out.line("table", cpu_table, "server CPU time per create + run", "time", "user + system time of the server process")
    row = f"{SERVER_CLIENTS} clients"
    lg_series = f"LangGraph server (langgraph-api {version('langgraph-api')}, inmem)"
    lgadk_series = "lgadk-server (memory, offline model)"
    env = dict(os.environ)
    env.update(
        {
            "LANGGRAPH_CLI_NO_ANALYTICS": "1",
            "LANGSMITH_TRACING": "false",
            "LANGCHAIN_TRACING_V2": "false",
            "LANGGRAPH_NO_VERSION_CHECK": "1",
            "LOG_LEVEL": "WARNING",
            "RUST_LOG": "warn",
        }
    )
    with tempfile.TemporaryDirectory(prefix="lg-server-peer-") as tmp:
        with open(os.path.join(tmp, "graph.py"), "w", encoding="utf-8") as file:
            file.write(SERVER_GRAPH)
        with open(os.path.join(tmp, "langgraph.json"), "w", encoding="utf-8") as file:
            file.write('{"dependencies": ["."], "graphs": {"agent": "./graph.py:graph"}}')
        servers = [
            (lg_series, [cli, "dev", "--no-browser", "--no-reload", "--config", "langgraph.json", "--port"]),
            (lgadk_series, [binary, "--bind"]),
        ]
        for series, command in servers:
            port = free_port()
            arg = str(port) if series == lg_series else f"127.0.0.1:{port}"
            log = open(os.path.join(tmp, f"{port}.log"), "wb")
            proc = subprocess.Popen(command + [arg], cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                url = f"http://127.0.0.1:{port}"
                wait_ok(url, proc, 120)
                per_second, cpu = measure_server(url, proc, seconds)
            finally:
                stop(proc)
                log.close()
            out.result(table, row, series, 1e9 / per_second)
            out.result(cpu_table, row, series, cpu * 1e9)
    out.line("compare", "lgadk-server vs LangGraph's server, runs/s", "peers", table, row, lgadk_series, table, row, lg_series)
    out.line("compare", "lgadk-server vs LangGraph's server, server CPU per run", "peers", cpu_table, row, lgadk_series, cpu_table, row, lg_series)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples and operations")
    parser.add_argument("--out", required=True, help="the results file to write")
    args = parser.parse_args()
    out = Out()
    out.line("meta", "mode", "quick" if args.quick else "full")
    out.line("meta", "python", platform.python_version())
    out.line(
        "meta",
        "packages",
        ", ".join(
            f"{p} {version(p)}"
            for p in (
                "langgraph",
                "langgraph-checkpoint",
                "langgraph-checkpoint-postgres",
                "langchain-core",
                "google-adk",
                "langgraph-api",
                "langgraph-sdk",
            )
        ),
    )
    out.line(
        "note",
        "Peers measured by benches/peers/peers.py on the workloads of graph_overhead and session_concurrency, "
        "in the same `cargo xtask bench --peers` run. Values: median of the samples' averages.",
    )
    started = time.perf_counter()
    langgraph_turns(out, args.quick)
    langgraph_nodes(out, args.quick)
    langgraph_postgres(out, args.quick)
    adk_store(out, args.quick)
    server_peer(out, args.quick)
    out.line("meta", "seconds", f"{time.perf_counter() - started:.1f}")
    with open(args.out, "w", encoding="utf-8") as file:
        file.write("\n".join(out.lines) + "\n")
    print(f"peer results: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
