//! `ferry mcp` driven over stdio by real MCP clients: rmcp's client (both protocol eras) and
//! the official Python SDK (`tests/mcp-python/check.py`), with a daemon session whose beta is a
//! real container.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender, channel};

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientConfig, ProtocolVersion,
    ReadResourceRequestParams, ResourceContents, ResourceUpdatedNotificationParam,
    ServerNotification, SubscribeRequestParams, SubscriptionFilter,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::TokioChildProcess;
use rmcp::{ClientHandler, ClientLifecycleMode, ClientServiceExt, RoleClient};
use serde_json::{Value, json};

use crate::daemon::Daemon;
use crate::remote_support::{Container, busybox_image};
use crate::support::{DEADLINE, ferry_bin};

/// The test's MCP client: resource updates go to a channel.
struct Notes(Mutex<Sender<String>>);

impl ClientHandler for Notes {
    async fn on_resource_updated(
        &self,
        params: ResourceUpdatedNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        if let Ok(tx) = self.0.lock() {
            let _ = tx.send(params.uri);
        }
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::default()
    }
}

type Mcp = RunningService<RoleClient, Notes>;

/// A tokio runtime for the client side.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// `ferry mcp` with the daemon's environment (and `config` as its settings file).
fn mcp_command(d: &Daemon, config: &Path) -> tokio::process::Command {
    let mut c: Command = d.command();
    c.arg("mcp").env("FERRY_MCP_CONFIG", config);
    tokio::process::Command::from(c)
}

/// Starts `ferry mcp` and connects with `lifecycle`.
fn connect(
    rt: &tokio::runtime::Runtime,
    d: &Daemon,
    config: &Path,
    lifecycle: ClientLifecycleMode,
) -> (Mcp, Receiver<String>) {
    let (tx, rx) = channel();
    let cmd = mcp_command(d, config);
    let client = rt.block_on(async {
        let transport = TokioChildProcess::new(cmd).expect("spawning ferry mcp");
        Notes(Mutex::new(tx))
            .serve_with_lifecycle(transport, lifecycle)
            .await
            .expect("connecting to ferry mcp")
    });
    (client, rx)
}

/// Calls `tool` with `args`; the result (a tool error is a result too).
fn call(rt: &tokio::runtime::Runtime, c: &Mcp, tool: &str, args: Value) -> CallToolResult {
    let Value::Object(args) = args else {
        panic!("arguments must be an object")
    };
    let tool = tool.to_owned();
    rt.block_on(c.call_tool(CallToolRequestParams::new(tool.clone()).with_arguments(args)))
        .unwrap_or_else(|e| panic!("calling {tool}: {e}"))
}

fn text(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect()
}

/// A successful call's structured result.
fn ok(rt: &tokio::runtime::Runtime, c: &Mcp, tool: &str, args: Value) -> Value {
    let r = call(rt, c, tool, args.clone());
    assert_ne!(r.is_error, Some(true), "{tool} {args} failed: {}", text(&r));
    r.structured_content
        .clone()
        .unwrap_or_else(|| Value::String(text(&r)))
}

/// A refused call's text (the call must be a tool error).
fn refused(rt: &tokio::runtime::Runtime, c: &Mcp, tool: &str, args: Value) -> String {
    let r = call(rt, c, tool, args.clone());
    assert_eq!(
        r.is_error,
        Some(true),
        "{tool} {args} was not refused: {}",
        text(&r)
    );
    let t = text(&r);
    assert!(
        !t.is_empty() && !t.contains('\n'),
        "{tool}: a one-line reason: {t:?}"
    );
    t
}

const TOOLS: [&str; 12] = [
    "create_session",
    "list_conflicts",
    "list_files",
    "list_sessions",
    "pause_session",
    "read_file",
    "resolve_conflict",
    "resume_session",
    "session_status",
    "sync_now",
    "terminate_session",
    "write_file",
];

/// The world of the container tests: `ROOT/app` as alpha beside `ROOT/app-secrets` (a sibling
/// sharing its prefix, CVE-2025-53110), with a link out of the root (CVE-2025-53109), a
/// sensitive file and a binary one; beta is `/srv/app` in a busybox container.
struct World {
    d: Daemon,
    c: Container,
    alpha: std::path::PathBuf,
    config: std::path::PathBuf,
}

fn world() -> World {
    let d = Daemon::with_agent();
    let c = Container::start(busybox_image(), &[]);
    let alpha = d.fx.root.join("app");
    let secrets = d.fx.root.join("app-secrets");
    fs::create_dir_all(alpha.join("src")).expect("mkdir");
    fs::create_dir_all(&secrets).expect("mkdir");
    fs::write(secrets.join("secret.txt"), "the sibling's secret").expect("write");
    fs::write(alpha.join("src/main.rs"), "fn main() {}\n").expect("write");
    fs::write(alpha.join(".env"), "TOKEN=hunter2\n").expect("write");
    fs::write(alpha.join("blob.bin"), b"\x00\x01\x02").expect("write");
    std::os::unix::fs::symlink("../app-secrets", alpha.join("escape")).expect("ln");
    std::os::unix::fs::symlink(secrets.join("secret.txt"), alpha.join("leak.txt")).expect("ln");
    let config = d.fx.root.join("mcp.conf");
    fs::write(
        &config,
        "max-write = 4KiB\nmax-read = 64KiB\nsync-timeout = 60\n",
    )
    .expect("write");
    World {
        d,
        c,
        alpha,
        config,
    }
}

#[test]
fn mcp_tools_with_a_container_beta_over_the_initialize_handshake() {
    let w = world();
    let rt = runtime();
    let (c, notes) = connect(&rt, &w.d, &w.config, ClientLifecycleMode::Initialize);
    let info = c.peer_info().expect("the server's info");
    assert_eq!(info.protocol_version, ProtocolVersion::V_2025_11_25);

    // Every tool, with a schema, a description and the annotations.
    let tools = rt.block_on(c.list_all_tools()).expect("tools/list");
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort();
    assert_eq!(names, TOOLS);
    for t in &tools {
        assert!(
            t.description.as_deref().is_some_and(|d| d.len() > 30),
            "{t:?}"
        );
        let a = t.annotations.as_ref().expect("annotations");
        let ro = a.read_only_hint.expect("readOnlyHint");
        assert_eq!(
            ro,
            matches!(
                t.name.as_ref(),
                "list_sessions" | "session_status" | "list_conflicts" | "list_files" | "read_file"
            ),
            "{}",
            t.name
        );
        if !ro {
            assert!(
                a.destructive_hint.is_some(),
                "{} has no destructiveHint",
                t.name
            );
        }
    }
    let write = tools
        .iter()
        .find(|t| t.name == "write_file")
        .expect("write_file");
    assert_eq!(
        write.input_schema.get("required").cloned(),
        Some(json!(["name", "side", "path", "content"]))
    );

    // create_session: beta is the container.
    let beta = format!("docker://{}/srv/app", w.c.name);
    let s = ok(
        &rt,
        &c,
        "create_session",
        json!({"name": "web", "alpha": w.alpha, "beta": beta}),
    );
    assert_eq!(s["name"], "web");
    assert_eq!(s["beta"], beta.as_str());
    let done = ok(&rt, &c, "sync_now", json!({"name": "web"}));
    assert_eq!(done["name"], "web", "{done}");
    assert_eq!(
        w.c.read_file("/srv/app/src/main.rs").as_deref(),
        Some(&b"fn main() {}\n"[..])
    );

    let all = ok(&rt, &c, "list_sessions", json!({}));
    assert_eq!(all["sessions"][0]["name"], "web", "{all}");
    let st = ok(&rt, &c, "session_status", json!({"name": "web"}));
    assert_eq!(st["alpha"], w.alpha.to_str().expect("utf-8"));
    assert!(st["files_to_beta"].as_u64() >= Some(1), "{st}");

    // list_files and read_file on both sides (beta through the agent).
    for side in ["alpha", "beta"] {
        let l = ok(&rt, &c, "list_files", json!({"name": "web", "side": side}));
        let entries = l["entries"].as_array().expect("entries");
        let src = entries.iter().find(|e| e["name"] == "src").expect("src");
        assert_eq!(src["kind"], "dir", "{l}");
        let l = ok(
            &rt,
            &c,
            "list_files",
            json!({"name": "web", "side": side, "path": "src"}),
        );
        assert_eq!(l["entries"][0]["name"], "main.rs", "{l}");
        assert_eq!(l["entries"][0]["size"], 13, "{l}");
        let r = call(
            &rt,
            &c,
            "read_file",
            json!({"name": "web", "side": side, "path": "src/main.rs"}),
        );
        assert_eq!(text(&r), "fn main() {}\n", "{side}");
    }

    // write_file on one side is on the other when it returns: both ways.
    let wrote = ok(
        &rt,
        &c,
        "write_file",
        json!({"name": "web", "side": "alpha", "path": "notes/todo.md", "content": "- ship\n"}),
    );
    assert_eq!(wrote["synced_to"], "beta", "{wrote}");
    assert_eq!(
        w.c.read_file("/srv/app/notes/todo.md").as_deref(),
        Some(&b"- ship\n"[..])
    );
    ok(
        &rt,
        &c,
        "write_file",
        json!({"name": "web", "side": "beta", "path": "src/main.rs", "content": "fn main() { run() }\n"}),
    );
    assert_eq!(
        fs::read_to_string(w.alpha.join("src/main.rs")).expect("read"),
        "fn main() { run() }\n"
    );

    // Traversal, absolute paths, NUL: the gate, with its rule.
    for (side, path) in [
        ("alpha", "../app-secrets/secret.txt"),
        ("beta", "../../etc/passwd"),
        ("alpha", "/etc/passwd"),
        ("beta", "src/\u{0}x"),
        ("alpha", "src/../../app-secrets/secret.txt"),
    ] {
        let why = refused(
            &rt,
            &c,
            "read_file",
            json!({"name": "web", "side": side, "path": path}),
        );
        assert!(
            why.contains("refused") && why.contains("rule"),
            "{path}: {why}"
        );
    }
    let why = refused(
        &rt,
        &c,
        "write_file",
        json!({"name": "web", "side": "alpha", "path": "../app-secrets/w.txt", "content": "x"}),
    );
    assert!(why.contains("refused"), "{why}");
    assert!(!w.d.fx.root.join("app-secrets/w.txt").exists());

    // CVE-2025-53109: links out of the root are never followed (alpha here, beta in the
    // container).
    w.c.sh("ln -s /etc /srv/app/etc-link && ln -s /etc/passwd /srv/app/pw");
    for (side, path) in [
        ("alpha", "escape/secret.txt"),
        ("alpha", "leak.txt"),
        ("beta", "etc-link/passwd"),
        ("beta", "pw"),
    ] {
        let why = refused(
            &rt,
            &c,
            "read_file",
            json!({"name": "web", "side": side, "path": path}),
        );
        assert!(why.contains("symbolic link"), "{side} {path}: {why}");
    }
    let why = refused(
        &rt,
        &c,
        "write_file",
        json!({"name": "web", "side": "alpha", "path": "escape/planted.txt", "content": "x"}),
    );
    assert!(why.contains("symbolic link"), "{why}");
    assert!(!w.d.fx.root.join("app-secrets/planted.txt").exists());
    let why = refused(
        &rt,
        &c,
        "list_files",
        json!({"name": "web", "side": "beta", "path": "etc-link"}),
    );
    assert!(why.contains("symbolic link"), "{why}");

    // Sensitive files, refused with the rule named (the sync itself is not filtered).
    for (tool, side, path, rule) in [
        ("read_file", "alpha", ".env", "'.env'"),
        ("read_file", "beta", ".env", "'.env'"),
        ("write_file", "beta", "certs/server.pem", "'*.pem'"),
        (
            "write_file",
            "alpha",
            "home/.ssh/authorized_keys",
            "'.ssh/'",
        ),
        ("list_files", "alpha", ".aws", "'.aws/'"),
    ] {
        let why = refused(
            &rt,
            &c,
            tool,
            json!({"name": "web", "side": side, "path": path, "content": "x"}),
        );
        assert!(
            why.contains("sensitive") && why.contains(rule),
            "{path}: {why}"
        );
    }
    assert!(!w.alpha.join("home").exists());
    assert_eq!(
        w.c.read_file("/srv/app/.env").as_deref(),
        Some(&b"TOKEN=hunter2\n"[..]),
        "syncing is not filtered"
    );

    // Caps: an oversized write (max-write = 4KiB here), a binary read.
    let why = refused(
        &rt,
        &c,
        "write_file",
        json!({"name": "web", "side": "alpha", "path": "big.txt", "content": "x".repeat(5000)}),
    );
    assert!(why.contains("max-write") && why.contains("4096"), "{why}");
    assert!(!w.alpha.join("big.txt").exists());
    let why = refused(
        &rt,
        &c,
        "read_file",
        json!({"name": "web", "side": "beta", "path": "blob.bin"}),
    );
    assert!(why.contains("binary"), "{why}");

    // Unknown session, bad arguments.
    let why = refused(&rt, &c, "session_status", json!({"name": "nope"}));
    assert!(why.contains("no session named 'nope'"), "{why}");
    let why = refused(
        &rt,
        &c,
        "read_file",
        json!({"name": "nope", "side": "alpha", "path": "x"}),
    );
    assert!(why.contains("no session named 'nope'"), "{why}");
    refused(
        &rt,
        &c,
        "read_file",
        json!({"name": "web", "side": "gamma", "path": "x"}),
    );
    refused(
        &rt,
        &c,
        "write_file",
        json!({"name": "web", "side": "alpha"}),
    );
    refused(&rt, &c, "session_status", json!({"name": 7}));
    let why = refused(
        &rt,
        &c,
        "create_session",
        json!({"name": "bad name", "alpha": w.alpha, "beta": "/tmp/x"}),
    );
    assert!(why.contains("bad session name"), "{why}");

    // Resources: the session's status, and an update when it gets a conflict.
    let res = rt.block_on(c.list_all_resources()).expect("resources/list");
    assert!(
        res.iter().any(|r| r.uri == "ferry://sessions/web"),
        "{res:?}"
    );
    let read = rt
        .block_on(c.read_resource(ReadResourceRequestParams::new("ferry://sessions/web")))
        .expect("resources/read");
    let ResourceContents::TextResourceContents { text: body, .. } = &read.contents[0] else {
        panic!("a text resource")
    };
    let status: Value = serde_json::from_str(body).expect("JSON status");
    assert_eq!(status["name"], "web");
    #[allow(deprecated)]
    rt.block_on(c.subscribe(SubscribeRequestParams::new("ferry://sessions/web")))
        .expect("resources/subscribe");

    let paused = ok(&rt, &c, "pause_session", json!({"name": "web"}));
    assert_eq!(paused["state"], "paused", "{paused}");
    fs::write(w.alpha.join("src/main.rs"), "alpha's edit\n").expect("write");
    w.c.write_file("/srv/app/src/main.rs", "beta's edit\n");
    let resumed = ok(&rt, &c, "resume_session", json!({"name": "web"}));
    assert_ne!(resumed["state"], "paused", "{resumed}");
    ok(&rt, &c, "sync_now", json!({"name": "web"}));
    let st = ok(&rt, &c, "session_status", json!({"name": "web"}));
    assert_eq!(st["conflicts"], 1, "{st}");
    let uri = notes
        .recv_timeout(DEADLINE)
        .expect("a resources/updated notification for the conflict");
    assert_eq!(uri, "ferry://sessions/web");

    // list_conflicts and resolve_conflict.
    let cs = ok(&rt, &c, "list_conflicts", json!({"name": "web"}));
    let conflict = &cs["conflicts"][0];
    assert_eq!(conflict["path"], "src/main.rs", "{cs}");
    assert_eq!(conflict["alpha"]["size"], 13, "{cs}");
    assert_eq!(conflict["beta"]["size"], 12, "{cs}");
    let why = refused(
        &rt,
        &c,
        "resolve_conflict",
        json!({"name": "web", "path": "src/main.rs", "keep": "both"}),
    );
    assert!(
        why.contains("parameters") && why.contains("`alpha` or `beta`"),
        "{why}"
    );
    let r = ok(
        &rt,
        &c,
        "resolve_conflict",
        json!({"name": "web", "path": "src/main.rs", "keep": "alpha"}),
    );
    assert_eq!(r["resolved"][0]["kept"], "alpha", "{r}");
    assert!(r["resolved"][0]["loser_copy"].is_string(), "{r}");
    assert_eq!(
        w.c.read_file("/srv/app/src/main.rs").as_deref(),
        Some(&b"alpha's edit\n"[..])
    );
    let st = ok(&rt, &c, "session_status", json!({"name": "web"}));
    assert_eq!(st["conflicts"], 0, "{st}");

    // sync_now restricted to paths, with exclusions (the daemon's flush runs the restriction;
    // the watcher may have synced these already): what it changed each way.
    fs::write(w.alpha.join("src/one.txt"), "1").expect("write");
    let done = ok(
        &rt,
        &c,
        "sync_now",
        json!({"name": "web", "paths": ["src"], "exclude": ["*.log"]}),
    );
    assert!(done["changed"]["alpha_to_beta"].is_array(), "{done}");
    assert!(done["changed"]["beta_to_alpha"].is_array(), "{done}");
    assert_eq!(
        w.c.read_file("/srv/app/src/one.txt").as_deref(),
        Some(&b"1"[..])
    );
    let why = refused(
        &rt,
        &c,
        "sync_now",
        json!({"name": "web", "paths": ["../x"]}),
    );
    assert!(why.contains("refused"), "{why}");

    // terminate_session: gone from the list.
    let t = ok(&rt, &c, "terminate_session", json!({"name": "web"}));
    assert_eq!(t["state"], "terminated", "{t}");
    let all = ok(&rt, &c, "list_sessions", json!({}));
    assert_eq!(all["sessions"], json!([]), "{all}");
    rt.block_on(c.cancel()).expect("closing the client");
}

#[test]
fn mcp_serves_the_discover_era_and_auto_negotiation() {
    let d = Daemon::new();
    let config = d.fx.root.join("none.conf");
    let rt = runtime();
    fs::write(d.fx.a("f.txt"), "from alpha").expect("write");
    let a = d.fx.alpha.to_str().expect("utf-8");
    let b = d.fx.beta.to_str().expect("utf-8");
    d.ok(&["create", a, b, "--name", "local"]);
    for mode in [
        ClientLifecycleMode::Discover {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        },
        ClientLifecycleMode::Auto {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            legacy_version: Some(ProtocolVersion::V_2025_11_25),
        },
    ] {
        let (c, _notes) = connect(&rt, &d, &config, mode.clone());
        let info = c.peer_info().expect("the server's info");
        assert_eq!(
            info.protocol_version,
            ProtocolVersion::V_2026_07_28,
            "{mode:?}"
        );
        let tools = rt.block_on(c.list_all_tools()).expect("tools/list");
        assert_eq!(tools.len(), TOOLS.len());
        let s = ok(&rt, &c, "session_status", json!({"name": "local"}));
        assert_eq!(s["name"], "local");
        let r = call(
            &rt,
            &c,
            "read_file",
            json!({"name": "local", "side": "alpha", "path": "f.txt"}),
        );
        assert_eq!(text(&r), "from alpha");
        rt.block_on(c.cancel()).expect("closing the client");
    }

    // The newer era's notifications: subscriptions/listen for the session's resource, then a
    // conflict.
    let (c, _notes) = connect(
        &rt,
        &d,
        &config,
        ClientLifecycleMode::Discover {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        },
    );
    let mut filter = SubscriptionFilter::new();
    filter.resource_subscriptions = Some(vec!["ferry://sessions/local".into()]);
    let mut sub = rt.block_on(c.listen(filter)).expect("subscriptions/listen");
    assert_eq!(
        sub.acknowledged().resource_subscriptions,
        Some(vec!["ferry://sessions/local".to_owned()])
    );
    ok(&rt, &c, "sync_now", json!({"name": "local"}));
    ok(&rt, &c, "pause_session", json!({"name": "local"}));
    fs::write(d.fx.a("f.txt"), "alpha's edit").expect("write");
    fs::write(d.fx.b("f.txt"), "beta's edit").expect("write");
    ok(&rt, &c, "resume_session", json!({"name": "local"}));
    ok(&rt, &c, "sync_now", json!({"name": "local"}));
    let note = rt
        .block_on(async { tokio::time::timeout(DEADLINE, sub.next()).await })
        .expect("a notification before the deadline")
        .expect("the subscription")
        .expect("a notification");
    let ServerNotification::ResourceUpdatedNotification(n) = note else {
        panic!("not a resources/updated notification: {note:?}")
    };
    assert_eq!(n.params.uri, "ferry://sessions/local");
    rt.block_on(c.cancel()).expect("closing the client");
}

#[test]
fn mcp_through_the_official_python_sdk_in_both_eras() {
    // The interpreter itself (not a pyenv shim, which needs the real HOME), and its SDK.
    let py = Command::new("python3")
        .args([
            "-c",
            "import sys, importlib.metadata as m; print(sys.executable); print(m.version('mcp'))",
        ])
        .output()
        .expect("python3 is needed (scripts/test.sh installs it and the mcp package)");
    assert!(
        py.status.success(),
        "the Python MCP SDK is missing: pip install 'mcp>=2' (scripts/test.sh does): {}",
        String::from_utf8_lossy(&py.stderr)
    );
    let found = String::from_utf8_lossy(&py.stdout).to_string();
    let mut lines = found.lines();
    let (python, version) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
    assert!(
        version
            .split('.')
            .next()
            .and_then(|m| m.parse::<u32>().ok())
            >= Some(2),
        "mcp {version} is too old: pip install 'mcp>=2'"
    );
    let w = world();
    let beta = format!("docker://{}/srv/app", w.c.name);
    let a = w.alpha.to_str().expect("utf-8");
    w.d.ok(&["create", a, &beta, "--name", "py"]);
    w.d.ok(&["flush", "py"]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp-python/check.py");
    // The script starts `ferry mcp` itself, with the daemon's environment.
    let mut cmd = Command::new(python);
    cmd.arg(&script).args([ferry_bin(), "py", a]);
    for (k, v) in w.d.command().get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = cmd
        .env("FERRY_MCP_CONFIG", &w.config)
        .current_dir(&w.d.fx.root)
        .output()
        .expect("running the Python check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}\n--- daemon log ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        w.d.log()
    );
    assert!(
        stdout.contains("legacy ClientSession: 2025-11-25"),
        "{stdout}"
    );
    assert!(stdout.contains("auto Client: 2026-07-28"), "{stdout}");
    assert_eq!(
        w.c.read_file("/srv/app/py/legacy.txt").as_deref(),
        Some(&b"written by the Python SDK's legacy client\n"[..])
    );
}
