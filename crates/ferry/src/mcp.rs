//! `ferry mcp`: an MCP server on stdio (rmcp), a client of the daemon like the other
//! commands (started on demand). It serves both protocol eras: the 2025-11-25 `initialize`
//! handshake and the newer `server/discover` (rmcp answers both).
//!
//! Tools relay daemon requests; the file tools go through the daemon's `file` request, which
//! confines every path beneath the chosen side's root ([`crate::files`]). This process holds
//! the MCP policy: the sensitive-file deny list and the size caps (settings in
//! [`crate::files::Config::path`]). Every refusal or failure is a tool error (`isError`) whose
//! text says why and which rule.
//!
//! Resources: each session's status as `ferry://sessions/NAME`; a client subscribed to one is
//! sent `notifications/resources/updated` when that session gets a new conflict or error (the
//! daemon's list is polled every [`POLL`]).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_core::RelPath;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorCode,
    Implementation, ListResourcesResult, PaginatedRequestParams, ReadResourceRequestParams,
    ReadResourceResponse, ReadResourceResult, Resource, ResourceContents,
    ResourceUpdatedNotificationParam, ServerCapabilities, ServerConfig, SubscribeRequestParams,
    SubscriptionFilter, UnsubscribeRequestParams,
};
use rmcp::service::{RequestContext, SubscriptionContext};
use rmcp::{
    ErrorData, Peer, RoleServer, ServerHandler, ServiceExt, tool, tool_handler, tool_router,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::files::{Config, DenyList, FileAnswer, FileOp};

/// How often the daemon's status is polled for resource notifications.
pub const POLL: Duration = Duration::from_millis(500);

/// The URI of a session's status resource.
pub const URI_PREFIX: &str = "ferry://sessions/";

/// A side of a session.
#[derive(Clone, Copy, Debug, Deserialize, rmcp::schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(rename_all = "lowercase")]
pub enum SideArg {
    /// The session's first endpoint (usually the host's directory).
    Alpha,
    /// The session's second endpoint (usually the container, SSH host or pod).
    Beta,
}

impl SideArg {
    fn as_str(self) -> &'static str {
        match self {
            SideArg::Alpha => "alpha",
            SideArg::Beta => "beta",
        }
    }

    fn other(self) -> SideArg {
        match self {
            SideArg::Alpha => SideArg::Beta,
            SideArg::Beta => SideArg::Alpha,
        }
    }
}

#[derive(Debug, Deserialize, rmcp::schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct NameArgs {
    /// The session's name (see list_sessions).
    pub name: String,
}

#[derive(Debug, Deserialize, rmcp::schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct CreateArgs {
    /// A new session name: letters, digits, '.', '_', '-', at most 64.
    pub name: String,
    /// The first endpoint: an absolute host directory (relative ones are taken from the
    /// server's working directory).
    pub alpha: String,
    /// The second endpoint: a directory, docker://[USER@]CONTAINER/abs/path,
    /// [USER@]HOST:PATH or k8s://[CONTEXT/]NAMESPACE/POD[/CONTAINER]/abs/path.
    pub beta: String,
    /// two-way-safe (default), two-way-resolved, two-way-newest, one-way-safe or
    /// one-way-replica.
    #[serde(default)]
    pub mode: Option<String>,
    /// Ignore patterns (gitignore syntax), left out both ways.
    #[serde(default)]
    pub ignore: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, rmcp::schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct SyncArgs {
    /// The session's name.
    pub name: String,
    /// Only these paths (relative to the session's roots) are synced in this cycle.
    #[serde(default)]
    pub paths: Option<Vec<String>>,
    /// Patterns (gitignore syntax) left out of this cycle.
    #[serde(default)]
    pub exclude: Option<Vec<String>>,
}

#[derive(Clone, Copy, Debug, Deserialize, rmcp::schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(rename_all = "lowercase")]
pub enum KeepArg {
    /// Keep alpha's version; beta's goes to the backup area.
    Alpha,
    /// Keep beta's version; alpha's goes to the backup area.
    Beta,
}

#[derive(Debug, Deserialize, rmcp::schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct ResolveArgs {
    /// The session's name.
    pub name: String,
    /// The conflicting path, relative to the roots (as list_conflicts gives it).
    pub path: String,
    /// Which side's version wins.
    pub keep: KeepArg,
}

#[derive(Debug, Deserialize, rmcp::schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct ListArgs {
    /// The session's name.
    pub name: String,
    /// Which side to look at.
    pub side: SideArg,
    /// A directory relative to the side's root (default: the root).
    #[serde(default)]
    pub path: Option<String>,
}

#[derive(Debug, Deserialize, rmcp::schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct ReadArgs {
    /// The session's name.
    pub name: String,
    /// Which side to read from.
    pub side: SideArg,
    /// A file relative to the side's root.
    pub path: String,
}

#[derive(Debug, Deserialize, rmcp::schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct WriteArgs {
    /// The session's name.
    pub name: String,
    /// Which side to write on; the session then syncs the file to the other side.
    pub side: SideArg,
    /// A file relative to the side's root (missing directories are made).
    pub path: String,
    /// The file's whole new content (text).
    pub content: String,
}

/// A tool's failure: the text the client shows.
type Refusal = String;

fn done(v: Value) -> Result<CallToolResult, ErrorData> {
    Ok(CallToolResult::structured(v))
}

fn refused(why: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(why.into())])
}

/// Sends `req` to the daemon (started if needed) on a blocking thread.
async fn ask(req: Value) -> Result<Value, Refusal> {
    let mut v = tokio::task::spawn_blocking(move || crate::sessions::request(req, true))
        .await
        .map_err(|e| format!("internal error: {e}"))?
        .map_err(|f| f.message)?
        .ok_or_else(|| "the ferry daemon did not start".to_owned())?;
    if let Some(o) = v.as_object_mut() {
        o.remove("ok");
        o.remove("version");
    }
    Ok(v)
}

/// Every session, as `ferry list --json` gives them.
async fn sessions() -> Result<Vec<Value>, Refusal> {
    let v = ask(json!({"op": "list"})).await?;
    Ok(v.get("sessions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default())
}

/// One session's status (the daemon's `status NAME`).
async fn session(name: &str) -> Result<Value, Refusal> {
    let v = ask(json!({"op": "status", "name": name})).await?;
    Ok(v.get("session").cloned().unwrap_or(v))
}

/// A path argument through ferry's one gate (relative, no `..`, no NUL, not absolute).
fn gate(path: &str) -> Result<RelPath, Refusal> {
    let p = path.trim_end_matches('/');
    let p = if p == "." { "" } else { p };
    let p = p.strip_prefix("./").unwrap_or(p);
    RelPath::new(p).map_err(|e| {
        format!(
            "refused: {e} (rule: paths are relative to the session's root, without '..' or NUL)"
        )
    })
}

/// The MCP server.
#[derive(Clone)]
pub struct Server {
    tool_router: ToolRouter<Server>,
    config: Arc<Config>,
    deny: Arc<DenyList>,
    /// Subscribed resource URIs and the peer to tell.
    subs: Arc<Mutex<Subs>>,
}

#[derive(Default)]
struct Subs {
    uris: HashSet<String>,
    peer: Option<Peer<RoleServer>>,
}

impl Server {
    pub fn new(config: Config) -> Result<Server, String> {
        let deny = DenyList::new(&config)?;
        Ok(Server {
            tool_router: Self::tool_router(),
            config: Arc::new(config),
            deny: Arc::new(deny),
            subs: Arc::default(),
        })
    }

    fn check_denied(&self, path: &RelPath, is_dir: bool) -> Result<(), Refusal> {
        match self.deny.denied(path, is_dir) {
            Some(rule) => Err(format!(
                "refused: '{path}' is a sensitive file (deny rule '{rule}'); file tools never \
                 touch it (the rules are in {}; syncing is not affected)",
                Config::path().map_or("ferry's MCP settings".into(), |p| p.display().to_string())
            )),
            None => Ok(()),
        }
    }

    /// The daemon's `file` request; a refusal becomes the tool's error text.
    async fn file(&self, name: &str, side: SideArg, op: FileOp) -> Result<FileAnswer, Refusal> {
        let req = json!({"op": "file", "name": name, "side": side.as_str(), "file": op});
        let v = ask(req).await?;
        let answer: FileAnswer = v
            .get("answer")
            .cloned()
            .ok_or_else(|| "the daemon's answer has no result".to_owned())
            .and_then(|a| serde_json::from_value(a).map_err(|e| e.to_string()))?;
        match answer {
            FileAnswer::Refused(why) => Err(why),
            a => Ok(a),
        }
    }

    async fn write(&self, a: WriteArgs) -> Result<Value, Refusal> {
        let path = gate(&a.path)?;
        if path.is_root() {
            return Err("give a file's path, not the root".into());
        }
        self.check_denied(&path, false)?;
        let max = self.config.max_write;
        if a.content.len() as u64 > max {
            return Err(format!(
                "refused: {} bytes to write, over the write limit of {max} bytes (rule: \
                 max-write)",
                a.content.len()
            ));
        }
        let op = FileOp::Write {
            path: path.clone(),
            content: a.content,
            max,
        };
        let FileAnswer::Written(wrote) = self.file(&a.name, a.side, op).await? else {
            return Err("the daemon answered a write with something else".into());
        };
        // Synced once the other side holds these very bytes.
        let other = a.side.other();
        let deadline = Instant::now() + Duration::from_secs(self.config.sync_timeout);
        let mut last;
        loop {
            let flushed = ask(json!({"op": "flush", "name": a.name, "paths": [path.as_str()]}))
                .await
                .map_err(|e| format!("written on {}, but not synced: {e}", a.side.as_str()))?;
            let there = self
                .file(&a.name, other, FileOp::Stat { path: path.clone() })
                .await;
            match there {
                Ok(FileAnswer::Stat(Some(st))) if st == wrote => {
                    return Ok(json!({
                        "path": path.as_str(),
                        "side": a.side.as_str(),
                        "size": wrote.size,
                        "digest": wrote.digest,
                        "synced_to": other.as_str(),
                    }));
                }
                Ok(FileAnswer::Stat(st)) => {
                    last = match st {
                        Some(_) => format!("{} has another version", other.as_str()),
                        None => format!("{} does not have it yet", other.as_str()),
                    };
                    let conflicts = flushed
                        .get("conflicts")
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                    if conflicts > 0 {
                        last.push_str(&format!(
                            "; the session has {conflicts} conflict(s) (see list_conflicts)"
                        ));
                    }
                }
                Ok(_) => last = "unexpected answer".into(),
                Err(e) => last = e,
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "written on {}, but not synced to {} within {}s: {last} (setting: \
                     sync-timeout)",
                    a.side.as_str(),
                    other.as_str(),
                    self.config.sync_timeout
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn outcome(r: Result<Value, Refusal>) -> Result<CallToolResult, ErrorData> {
    match r {
        Ok(v) => done(v),
        Err(e) => Ok(refused(e)),
    }
}

/// The daemon's answer for one session of a by-name request (`{"sessions": [x]}`).
fn first(v: Value) -> Value {
    v.get("sessions")
        .and_then(|s| s.get(0))
        .cloned()
        .unwrap_or(v)
}

#[tool_router]
impl Server {
    /// Every ferry sync session: name, alpha and beta endpoints, state (watching, syncing,
    /// paused, reconnecting, error), last sync each way (Unix seconds), files and bytes
    /// synced, conflicts and the last error. Start here to learn the session names.
    #[tool(annotations(title = "List sessions", read_only_hint = true))]
    async fn list_sessions(&self) -> Result<CallToolResult, ErrorData> {
        outcome(sessions().await.map(|s| json!({ "sessions": s })))
    }

    /// One session's status: state, alpha, beta, last sync each way (Unix seconds), files
    /// and bytes synced each way in the last hour, tree size (bytes and files), conflicts,
    /// errors and the last error.
    #[tool(annotations(title = "Session status", read_only_hint = true))]
    async fn session_status(
        &self,
        Parameters(a): Parameters<NameArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        outcome(session(&a.name).await)
    }

    /// Creates a background sync session between alpha and beta (kept by the ferry daemon,
    /// resumed after restarts) and returns it. The first sync runs at once.
    #[tool(annotations(
        title = "Create a session",
        read_only_hint = false,
        destructive_hint = false
    ))]
    async fn create_session(
        &self,
        Parameters(a): Parameters<CreateArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let mut options = crate::cli::SessionOptions::default();
        if let Some(m) = a.mode {
            options.mode = m;
        }
        options.ignores = a.ignore.unwrap_or_default();
        let spec = crate::sessions::spec(&a.name, &a.alpha, &a.beta, options, &[]);
        let r = match spec {
            Ok(spec) => ask(json!({"op": "create", "spec": spec}))
                .await
                .map(|v| v.get("session").cloned().unwrap_or(v)),
            Err(e) => Err(e),
        };
        outcome(r)
    }

    /// Runs a sync cycle now and waits for it; returns what it changed each way. `paths`
    /// restricts the cycle to those paths, `exclude` leaves patterns out of this cycle.
    #[tool(annotations(
        title = "Sync now",
        read_only_hint = false,
        destructive_hint = true,
        idempotent_hint = true
    ))]
    async fn sync_now(
        &self,
        Parameters(a): Parameters<SyncArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let mut req = json!({"op": "flush", "name": a.name});
        if let Some(paths) = a.paths {
            let mut gated = Vec::new();
            for p in &paths {
                match gate(p) {
                    Ok(p) => gated.push(p.as_str().to_owned()),
                    Err(e) => return Ok(refused(e)),
                }
            }
            req["paths"] = json!(gated);
        }
        if let Some(ex) = a.exclude {
            req["exclude"] = json!(ex);
        }
        outcome(ask(req).await.map(first))
    }

    /// Pauses a session: nothing syncs until resume_session. Returns its new state.
    #[tool(annotations(
        title = "Pause a session",
        read_only_hint = false,
        destructive_hint = false
    ))]
    async fn pause_session(
        &self,
        Parameters(a): Parameters<NameArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        outcome(ask(json!({"op": "pause", "name": a.name})).await.map(first))
    }

    /// Resumes a paused (or failed) session. Returns its new state.
    #[tool(annotations(
        title = "Resume a session",
        read_only_hint = false,
        destructive_hint = false
    ))]
    async fn resume_session(
        &self,
        Parameters(a): Parameters<NameArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        outcome(
            ask(json!({"op": "resume", "name": a.name}))
                .await
                .map(first),
        )
    }

    /// Ends a session for good (its files stay where they are on both sides).
    #[tool(annotations(
        title = "Terminate a session",
        read_only_hint = false,
        destructive_hint = true
    ))]
    async fn terminate_session(
        &self,
        Parameters(a): Parameters<NameArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        outcome(
            ask(json!({"op": "terminate", "name": a.name}))
                .await
                .map(first),
        )
    }

    /// A session's conflicts: for each path, what each side did (change, size, time). Settle
    /// one with resolve_conflict.
    #[tool(annotations(title = "List conflicts", read_only_hint = true))]
    async fn list_conflicts(
        &self,
        Parameters(a): Parameters<NameArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        outcome(ask(json!({"op": "conflicts", "name": a.name})).await)
    }

    /// Settles a conflict: `keep` names the side whose version wins; the other version is
    /// moved to the backup area. Returns what was kept and where the loser's copy is.
    #[tool(annotations(
        title = "Resolve a conflict",
        read_only_hint = false,
        destructive_hint = true
    ))]
    async fn resolve_conflict(
        &self,
        Parameters(a): Parameters<ResolveArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let path = match gate(&a.path) {
            Ok(p) if !p.is_root() => p,
            Ok(_) => return Ok(refused("give the conflicting path, not the root")),
            Err(e) => return Ok(refused(e)),
        };
        let keep = match a.keep {
            KeepArg::Alpha => "alpha",
            KeepArg::Beta => "beta",
        };
        let req = json!({"op": "resolve", "name": a.name, "paths": [path.as_str()], "keep": keep});
        outcome(ask(req).await)
    }

    /// The entries of a directory on one side of a session: name, kind (file, dir, symlink,
    /// other), size in bytes, modification time (Unix seconds). Symlinks are listed, never
    /// followed.
    #[tool(annotations(title = "List files", read_only_hint = true))]
    async fn list_files(
        &self,
        Parameters(a): Parameters<ListArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let r = async {
            let path = gate(a.path.as_deref().unwrap_or(""))?;
            self.check_denied(&path, true)?;
            let FileAnswer::Listing(entries) = self
                .file(&a.name, a.side, FileOp::List { path: path.clone() })
                .await?
            else {
                return Err("the daemon answered a listing with something else".into());
            };
            Ok(json!({ "side": a.side.as_str(), "path": path.as_str(), "entries": entries }))
        };
        outcome(r.await)
    }

    /// The text of a file on one side of a session. Binary files, files over the read limit
    /// and sensitive files (.env, keys, credentials...) are refused with the reason.
    #[tool(annotations(title = "Read a file", read_only_hint = true))]
    async fn read_file(
        &self,
        Parameters(a): Parameters<ReadArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let r = async {
            let path = gate(&a.path)?;
            self.check_denied(&path, false)?;
            let op = FileOp::Read {
                path: path.clone(),
                max: self.config.max_read,
            };
            match self.file(&a.name, a.side, op).await? {
                FileAnswer::Text(t) => Ok::<String, Refusal>(t),
                _ => Err("the daemon answered a read with something else".into()),
            }
        };
        match r.await {
            Ok(text) => Ok(CallToolResult::success(vec![ContentBlock::text(text)])),
            Err(e) => Ok(refused(e)),
        }
    }

    /// Writes a whole text file on one side of a session, atomically, then has the session
    /// sync it and returns once the other side holds the same bytes. Sensitive files and
    /// content over the write limit are refused with the reason.
    #[tool(annotations(
        title = "Write a file",
        read_only_hint = false,
        destructive_hint = true
    ))]
    async fn write_file(
        &self,
        Parameters(a): Parameters<WriteArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        outcome(self.write(a).await)
    }
}

fn uri(name: &str) -> String {
    format!("{URI_PREFIX}{name}")
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Server {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_resources_subscribe()
                .build(),
        )
        .with_server_info(Implementation::new("ferry", crate::daemon::VERSION))
        .with_instructions(
            "ferry keeps directories in sync between this machine and containers, SSH hosts \
             and pods. list_sessions names the sessions; the file tools work on a session's \
             alpha or beta side and write_file returns once the other side has the file.",
        )
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let tcc = ToolCallContext::new(self, request, context);
        match self.tool_router.call(tcc).await {
            // Arguments that do not fit the schema are the caller's to fix: a tool error it
            // can read, not a protocol error.
            Err(e) if e.code == ErrorCode::INVALID_PARAMS && e.message != "tool not found" => {
                Ok(refused(format!("bad arguments: {}", e.message)).into())
            }
            r => r,
        }
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let all = sessions()
            .await
            .map_err(|e| ErrorData::internal_error(e, None))?;
        let items = all
            .iter()
            .filter_map(|s| s.get("name").and_then(Value::as_str))
            .map(|name| {
                Resource::new(uri(name), name)
                    .with_title(format!("ferry session {name}"))
                    .with_description("The session's status (as session_status gives it)")
                    .with_mime_type("application/json")
            })
            .collect();
        Ok(ListResourcesResult::with_all_items(items))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let Some(name) = request.uri.strip_prefix(URI_PREFIX) else {
            return Err(ErrorData::resource_not_found(
                format!("no resource {} (ferry's are {URI_PREFIX}NAME)", request.uri),
                None,
            ));
        };
        let s = session(name)
            .await
            .map_err(|e| ErrorData::resource_not_found(e, None))?;
        let text = serde_json::to_string_pretty(&s).unwrap_or_default();
        let mut c = ResourceContents::text(text, request.uri.clone());
        if let ResourceContents::TextResourceContents { mime_type, .. } = &mut c {
            *mime_type = Some("application/json".into());
        }
        Ok(ReadResourceResult::new(vec![c]).into())
    }

    #[allow(deprecated)]
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let mut subs = self.subs.lock().unwrap_or_else(|p| p.into_inner());
        subs.uris.insert(request.uri);
        subs.peer = Some(context.peer);
        Ok(())
    }

    /// The newer era's `subscriptions/listen`: resource subscriptions to sessions' statuses.
    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        let mut f = SubscriptionFilter::new();
        f.resource_subscriptions = requested.resource_subscriptions.as_ref().map(|uris| {
            uris.iter()
                .filter(|u| u.starts_with(URI_PREFIX))
                .cloned()
                .collect()
        });
        Some(f)
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        let uris: HashSet<String> = context
            .accepted()
            .resource_subscriptions
            .iter()
            .flatten()
            .cloned()
            .collect();
        let mut before = BTreeMap::new();
        loop {
            if tokio::time::timeout(POLL, context.cancelled())
                .await
                .is_ok()
            {
                return Ok(());
            }
            for name in poll(&mut before).await {
                let u = uri(&name);
                if uris.contains(&u) && context.sink().notify_resource_updated(u).await.is_err() {
                    return Ok(());
                }
            }
        }
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let mut subs = self.subs.lock().unwrap_or_else(|p| p.into_inner());
        subs.uris.remove(&request.uri);
        Ok(())
    }
}

/// What a notification is sent for: a session's conflict and error counts and last error.
pub type Alarm = (u64, u64, Option<String>);

/// A session's [`Alarm`] from its status.
pub fn alarm(s: &Value) -> Alarm {
    let n = |k: &str| s.get(k).and_then(Value::as_u64).unwrap_or(0);
    let e = s
        .get("last_error")
        .and_then(Value::as_str)
        .map(str::to_owned);
    (n("conflicts"), n("errors"), e)
}

/// The sessions whose state warrants a notification: a new conflict or a new error since
/// `before` (a session seen for the first time counts from nothing).
pub fn alarmed(before: &BTreeMap<String, Alarm>, now: &BTreeMap<String, Alarm>) -> Vec<String> {
    now.iter()
        .filter(|(name, (c, e, last))| {
            let (c0, e0, last0) = before.get(*name).cloned().unwrap_or_default();
            *c > c0 || *e > e0 || (last.is_some() && *last != last0)
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// Reads the daemon's list once: the sessions that got a new conflict or error since `before`
/// (which becomes the list read). Nothing when the daemon cannot be asked.
async fn poll(before: &mut BTreeMap<String, Alarm>) -> Vec<String> {
    let list =
        tokio::task::spawn_blocking(|| crate::sessions::request(json!({"op": "list"}), false))
            .await;
    let Ok(Ok(Some(list))) = list else {
        return Vec::new();
    };
    let now: BTreeMap<String, Alarm> = list
        .get("sessions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| Some((s.get("name")?.as_str()?.to_owned(), alarm(s))))
        .collect();
    let names = alarmed(before, &now);
    *before = now;
    names
}

/// The 2025-11-25 era: tells the client of `resources/subscribe` about sessions that got a new
/// conflict or error.
async fn watch(subs: Arc<Mutex<Subs>>) {
    let mut before = BTreeMap::new();
    loop {
        tokio::time::sleep(POLL).await;
        let peer = {
            let s = subs.lock().unwrap_or_else(|p| p.into_inner());
            if s.uris.is_empty() {
                None
            } else {
                s.peer.clone()
            }
        };
        let Some(peer) = peer else {
            continue;
        };
        for name in poll(&mut before).await {
            let u = uri(&name);
            let wanted = subs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .uris
                .contains(&u);
            if wanted {
                let _ = peer
                    .notify_resource_updated(ResourceUpdatedNotificationParam::new(u))
                    .await;
            }
        }
    }
}

/// `ferry mcp`: serves MCP on stdin/stdout until the client closes it. A one-line reason if
/// it cannot start.
pub fn run() -> Result<(), String> {
    let config = Config::load()?;
    let server = Server::new(config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async move {
        tokio::spawn(watch(server.subs.clone()));
        let running = server
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| format!("MCP session failed to start: {e}"))?;
        running
            .waiting()
            .await
            .map_err(|e| format!("MCP session ended: {e}"))?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_takes_relative_paths_only() {
        assert_eq!(gate("src/a.rs").expect("ok").as_str(), "src/a.rs");
        assert_eq!(gate(".").expect("ok").as_str(), "");
        assert_eq!(gate("./src/").expect("ok").as_str(), "src");
        for bad in [
            "../x",
            "/etc/passwd",
            "a/../../b",
            "a\0b",
            "a//b",
            "../app-secrets/k",
        ] {
            let e = gate(bad).expect_err(bad);
            assert!(e.starts_with("refused:") && e.contains("rule"), "{e}");
        }
    }

    #[test]
    fn new_conflicts_and_errors_alarm_and_old_ones_do_not() {
        let m = |v: &[(&str, u64, u64, Option<&str>)]| {
            v.iter()
                .map(|(n, c, e, l)| (n.to_string(), (*c, *e, l.map(str::to_owned))))
                .collect::<BTreeMap<_, _>>()
        };
        let before = m(&[("a", 0, 0, None), ("b", 1, 0, None), ("c", 0, 1, Some("x"))]);
        let now = m(&[
            ("a", 1, 0, None),
            ("b", 1, 0, None),
            ("c", 0, 1, Some("y")),
            ("d", 0, 0, None),
            ("e", 0, 2, None),
        ]);
        assert_eq!(alarmed(&before, &now), ["a", "c", "e"]);
        assert!(alarmed(&now, &now).is_empty());
    }
}
