//! Logs in JFrog's formats: the service log and the request log, as text lines or JSON lines,
//! to stderr and optionally to size-rotated files under a log folder.
//!
//! Service log line (JFrog's shape, `jfcon` being this service's type):
//! `2026-12-01T10:00:00.000Z [jfcon] [INFO ] [5f2c9a1e0b7d4c36] [jobs::scheduler:142] [tokio-runtime-worker] - job started job=usage`.
//! Request log line (JFrog's pipe-separated shape):
//! `time|trace id|remote address|user|method|path|status|request length|response length|duration ms|user agent`.
//! The path never carries the query string, and no header value but the user agent is logged,
//! so tokens and query secrets never reach a log.
//!
//! A trace id is made per job run and per request ([`trace_span`]); every line logged inside
//! shows it, and outbound requests carry it as the [`TRACE_HEADER`] header
//! ([`current_trace_id`]).
//!
//! Log lines are formatted and written only here; colour only on a terminal with `NO_COLOR`
//! unset, never into a file.

use crate::clock::{Clock, SystemClock};
use chrono::SecondsFormat;
use serde::Serialize;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The header that carries the trace id to JES, JCS, the JPD and the store (and back to API
/// callers).
pub const TRACE_HEADER: &str = "X-JFrog-Trace-Id";

/// The service log's file name under the log folder.
pub const SERVICE_LOG: &str = "jfconnect-service.log";
/// The request log's file name under the log folder.
pub const REQUEST_LOG: &str = "jfconnect-request.log";
/// The audit log's file name (state changes made through the API), beside the other logs.
pub(crate) const AUDIT_LOG: &str = "jfconnect-audit.log";

/// Text lines or JSON lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JFrog's text line format.
    #[default]
    Text,
    /// One JSON object per line, with the same fields.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("expected text or json, not {s:?}")),
        }
    }
}

/// Where and how to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// Text or JSON lines.
    pub format: LogFormat,
    /// The folder for `jfconnect-service.log` and `jfconnect-request.log`; `None`: stderr only
    /// (and no request log file).
    pub dir: Option<PathBuf>,
    /// A log file is rotated once it passes this size.
    pub max_bytes: u64,
    /// How many rotated files are kept beside the current one.
    pub max_files: usize,
    /// True when `NO_COLOR` is set (colour is off even on a terminal).
    pub no_color: bool,
}

/// Default rotation size: 25 MiB, as JFrog services.
pub(crate) const DEFAULT_MAX_BYTES: u64 = 25 * 1024 * 1024;
/// Default number of rotated files kept.
pub(crate) const DEFAULT_MAX_FILES: usize = 10;

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: LogFormat::Text,
            dir: None,
            max_bytes: DEFAULT_MAX_BYTES,
            max_files: DEFAULT_MAX_FILES,
            no_color: false,
        }
    }
}

/// A log file that rotates by size and keeps a bounded number of old files
/// (`name.1` newest .. `name.N` oldest).
struct Rotating(Mutex<file_rotate::FileRotate<file_rotate::suffix::AppendCount>>);

impl Rotating {
    fn open(dir: &Path, name: &str, settings: &LogSettings) -> std::io::Result<Rotating> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(name);
        // Probe once, so an unwritable folder is a clear error at start, not silence.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        Ok(Rotating(Mutex::new(file_rotate::FileRotate::new(
            path,
            file_rotate::suffix::AppendCount::new(settings.max_files),
            file_rotate::ContentLimit::BytesSurpassed(settings.max_bytes.max(1) as usize),
            file_rotate::compression::Compression::None,
            None,
        ))))
    }

    fn write_line(&self, line: &str) {
        let mut f = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // A full disk must not take the service down; the line is lost, stderr still has it.
        let _ = f.write_all(line.as_bytes()).and_then(|_| f.flush());
    }
}

/// The audit log: one JSON line per state change asked of the API, size-rotated like the other
/// logs. Opened at the first line (or by [`AuditLog::probe`] at start), so a process that never
/// changes state never creates it. What goes in is the caller's record; it must hold no secret.
pub(crate) struct AuditLog {
    dir: PathBuf,
    settings: LogSettings,
    file: Mutex<Option<Rotating>>,
}

impl AuditLog {
    /// The audit log in `dir`, rotated past `max_bytes` with `max_files` old files kept.
    pub fn new(dir: PathBuf, max_bytes: u64, max_files: usize) -> AuditLog {
        AuditLog {
            settings: LogSettings {
                max_bytes,
                max_files,
                ..LogSettings::default()
            },
            file: Mutex::new(None),
            dir,
        }
    }

    /// Opens (creating) the file now, so an unwritable folder is an error at start.
    pub fn probe(&self) -> Result<(), LogError> {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if file.is_none() {
            *file = Some(
                Rotating::open(&self.dir, AUDIT_LOG, &self.settings).map_err(|source| {
                    LogError::Dir {
                        path: self.dir.clone(),
                        source,
                    }
                })?,
            );
        }
        Ok(())
    }

    /// Appends `record` as one JSON line.
    pub(crate) fn append(&self, record: &impl Serialize) -> Result<(), LogError> {
        let mut line = serde_json::to_string(record).map_err(|e| LogError::Dir {
            path: self.dir.clone(),
            source: std::io::Error::other(e),
        })?;
        line.push('\n');
        self.probe()?;
        let file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = file.as_ref() {
            f.write_line(&line);
        }
        Ok(())
    }
}

/// Errors setting up logging.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The log folder or a file in it cannot be written.
    #[error("cannot write logs to {path}: {source}")]
    Dir {
        /// The folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A subscriber was installed already.
    #[error("logging was set up twice")]
    Twice,
}

/// Installs the service log (and the request log writer) for the whole process. `level` is the
/// `JFCONNECT_LOG` filter when set, else `default_level`.
pub fn init(settings: &LogSettings, default_level: &str) -> Result<(), LogError> {
    let filter =
        EnvFilter::try_from_env("JFCONNECT_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    let (service_file, request_file) = match &settings.dir {
        Some(dir) => {
            let err = |source| LogError::Dir {
                path: dir.clone(),
                source,
            };
            (
                Some(Rotating::open(dir, SERVICE_LOG, settings).map_err(err)?),
                Some(Rotating::open(dir, REQUEST_LOG, settings).map_err(err)?),
            )
        }
        None => (None, None),
    };
    let color = !settings.no_color && std::io::stderr().is_terminal();
    let layer = JfrogLayer {
        format: settings.format,
        color,
        file: service_file,
    };
    let _ = REQUESTS.set(RequestSink {
        format: settings.format,
        file: request_file,
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .try_init()
        .map_err(|_| LogError::Twice)
}

/// A fresh trace id: 16 lower-case hex digits, as JFrog's.
pub(crate) fn new_trace_id() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}

/// True for what is accepted as a trace id from a caller: 1 to 32 hex digits.
pub fn is_trace_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A span carrying `trace_id`; every line logged inside it, and every outbound request sent
/// inside it, carries the id. It is an ERROR-level span so it exists at every log level (a
/// one-off command logs errors only, and its outbound calls still carry the id).
pub(crate) fn trace_span(name: &'static str, trace_id: &str) -> tracing::Span {
    match name {
        "request" => tracing::error_span!("request", trace_id = %trace_id),
        _ => tracing::error_span!("job", job = name, trace_id = %trace_id),
    }
}

#[derive(Clone)]
struct TraceId(String);

/// The trace id of the current span, if logging is set up and a trace span is entered.
pub(crate) fn current_trace_id() -> Option<String> {
    tracing::Span::current()
        .with_subscriber(|(id, dispatch)| {
            let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
            let span = registry.span(id)?;
            span.scope()
                .find_map(|s| s.extensions().get::<TraceId>().map(|t| t.0.clone()))
        })
        .flatten()
}

struct JfrogLayer {
    format: LogFormat,
    color: bool,
    file: Option<Rotating>,
}

#[derive(Default)]
struct Fields {
    message: String,
    trace_id: Option<String>,
    rest: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "trace_id" => self.trace_id = Some(format!("{value:?}")),
            name => self.rest.push((name, format!("{value:?}"))),
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_string(),
            "trace_id" => self.trace_id = Some(value.to_string()),
            name => self.rest.push((name, value.to_string())),
        }
    }
}

impl<S> Layer<S> for JfrogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let (Some(t), Some(span)) = (fields.trace_id, ctx.span(id)) {
            span.extensions_mut().insert(TraceId(t));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let trace_id = ctx
            .event_scope(event)
            .and_then(|scope| {
                scope
                    .into_iter()
                    .find_map(|s| s.extensions().get::<TraceId>().map(|t| t.0.clone()))
            })
            .unwrap_or_default();
        let meta = event.metadata();
        let record = ServiceRecord {
            time: timestamp(),
            service: "jfcon",
            level: meta.level().as_str(),
            trace_id,
            module: meta
                .module_path()
                .unwrap_or(meta.target())
                .trim_start_matches("jfconnect::")
                .to_string(),
            line: meta.line().unwrap_or(0),
            thread: std::thread::current()
                .name()
                .unwrap_or("unnamed")
                .to_string(),
            message: fields.message,
            fields: fields.rest,
        };
        let plain = record.render(self.format, false);
        let shown = if self.color && self.format == LogFormat::Text {
            record.render(self.format, true)
        } else {
            plain.clone()
        };
        let _ = std::io::stderr().lock().write_all(shown.as_bytes());
        if let Some(f) = &self.file {
            f.write_line(&plain);
        }
    }
}

fn timestamp() -> String {
    SystemClock
        .now()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// One service log line's fields.
#[derive(Debug, Serialize)]
struct ServiceRecord {
    time: String,
    service: &'static str,
    level: &'static str,
    trace_id: String,
    module: String,
    line: u32,
    thread: String,
    message: String,
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "as_map")]
    fields: Vec<(&'static str, String)>,
}

fn as_map<S: serde::Serializer>(
    fields: &[(&'static str, String)],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(fields.len()))?;
    for (k, v) in fields {
        m.serialize_entry(k, v)?;
    }
    m.end()
}

impl ServiceRecord {
    fn render(&self, format: LogFormat, color: bool) -> String {
        if format == LogFormat::Json {
            let mut line = serde_json::to_string(self).unwrap_or_default();
            line.push('\n');
            return line;
        }
        let level = format!("{:<5}", self.level);
        let level = if color {
            let code = match self.level {
                "ERROR" => "31",
                "WARN" => "33",
                "INFO" => "32",
                _ => "2",
            };
            format!("\x1b[{code}m{level}\x1b[0m")
        } else {
            level
        };
        let mut line = format!(
            "{} [{}] [{level}] [{}] [{}:{}] [{}] - {}",
            self.time,
            self.service,
            self.trace_id,
            self.module,
            self.line,
            self.thread,
            self.message
        );
        for (k, v) in &self.fields {
            let _ = write!(line, " {k}={v}");
        }
        line.push('\n');
        line
    }
}

struct RequestSink {
    format: LogFormat,
    file: Option<Rotating>,
}

static REQUESTS: OnceLock<RequestSink> = OnceLock::new();

/// One request log entry.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RequestRecord {
    /// When the answer was ready (RFC 3339, milliseconds, UTC).
    pub time: String,
    /// The request's trace id.
    pub trace_id: String,
    /// The caller's address.
    pub remote_address: String,
    /// Who the caller proved to be (`api-token`) or `anonymous`.
    pub user: String,
    /// HTTP method.
    pub method: String,
    /// The path, without the query string.
    pub path: String,
    /// The answer's status.
    pub status: u16,
    /// The request body's declared length (-1 when not declared).
    pub request_content_length: i64,
    /// The answer body's length (-1 when streamed with no declared length).
    pub response_content_length: i64,
    /// Time to the answer's head, in milliseconds.
    pub duration_ms: i64,
    /// The caller's user agent.
    pub user_agent: String,
}

/// Keeps a logged value on one line and off the field separator.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c == '|' || c.is_control() { ' ' } else { c })
        .collect()
}

impl RequestRecord {
    /// The line as written to `jfconnect-request.log`.
    pub fn render(&self, format: LogFormat) -> String {
        let mut line = match format {
            LogFormat::Json => serde_json::to_string(self).unwrap_or_default(),
            LogFormat::Text => format!(
                "{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}",
                self.time,
                self.trace_id,
                self.remote_address,
                clean(&self.user),
                self.method,
                clean(&self.path),
                self.status,
                self.request_content_length,
                self.response_content_length,
                self.duration_ms,
                clean(&self.user_agent)
            ),
        };
        line.push('\n');
        line
    }
}

/// Logs one answered request: to the request log file when a log folder is set, and as a
/// DEBUG line of the service log (`JFCONNECT_LOG=debug` shows every request, 401s included).
pub(crate) fn log_request(record: &RequestRecord) {
    let sink = REQUESTS.get();
    let format = sink.map(|s| s.format).unwrap_or_default();
    let line = record.render(format);
    tracing::debug!(target: "jfconnect::request", "{}", line.trim_end());
    if let Some(file) = sink.and_then(|s| s.file.as_ref()) {
        file.write_line(&line);
    }
}

/// The current time as the logs write it.
pub(crate) fn now_text() -> String {
    timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> ServiceRecord {
        ServiceRecord {
            time: "2026-12-01T10:00:00.000Z".into(),
            service: "jfcon",
            level: "INFO",
            trace_id: "5f2c9a1e0b7d4c36".into(),
            module: "jobs::scheduler".into(),
            line: 142,
            thread: "main".into(),
            message: "job started".into(),
            fields: vec![("job", "usage".into())],
        }
    }

    #[test]
    fn text_line_is_jfrogs_format() {
        assert_eq!(
            record().render(LogFormat::Text, false),
            "2026-12-01T10:00:00.000Z [jfcon] [INFO ] [5f2c9a1e0b7d4c36] [jobs::scheduler:142] [main] - job started job=usage\n"
        );
    }

    #[test]
    fn colour_only_when_asked_and_never_in_json() {
        assert!(record()
            .render(LogFormat::Text, true)
            .contains("\x1b[32mINFO \x1b[0m"));
        assert!(!record().render(LogFormat::Text, false).contains('\x1b'));
        assert!(!record().render(LogFormat::Json, true).contains('\x1b'));
    }

    #[test]
    fn json_line_has_the_same_fields() {
        let v: serde_json::Value =
            serde_json::from_str(&record().render(LogFormat::Json, false)).unwrap();
        assert_eq!(v["time"], "2026-12-01T10:00:00.000Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["trace_id"], "5f2c9a1e0b7d4c36");
        assert_eq!(v["module"], "jobs::scheduler");
        assert_eq!(v["line"], 142);
        assert_eq!(v["thread"], "main");
        assert_eq!(v["message"], "job started");
        assert_eq!(v["fields"]["job"], "usage");
    }

    #[test]
    fn request_line_has_eleven_fields_and_no_separator_inside_one() {
        let r = RequestRecord {
            time: "2026-12-01T10:00:00.000Z".into(),
            trace_id: "ab".into(),
            remote_address: "127.0.0.1:5000".into(),
            user: "anonymous".into(),
            method: "GET".into(),
            path: "/api/v1/jobs".into(),
            status: 401,
            request_content_length: -1,
            response_content_length: 99,
            duration_ms: 3,
            user_agent: "curl|evil\nnext".into(),
        };
        let line = r.render(LogFormat::Text);
        assert_eq!(
            line,
            "2026-12-01T10:00:00.000Z|ab|127.0.0.1:5000|anonymous|GET|/api/v1/jobs|401|-1|99|3|curl evil next\n"
        );
        let v: serde_json::Value = serde_json::from_str(&r.render(LogFormat::Json)).unwrap();
        assert_eq!(v["status"], 401);
        assert_eq!(v["user_agent"], "curl|evil\nnext");
    }

    #[test]
    fn rotation_keeps_a_bounded_number_of_files() {
        let dir = tempfile::tempdir().unwrap();
        let settings = LogSettings {
            max_bytes: 1000,
            max_files: 3,
            ..LogSettings::default()
        };
        let f = Rotating::open(dir.path(), SERVICE_LOG, &settings).unwrap();
        let line = format!("{}\n", "x".repeat(99));
        for _ in 0..200 {
            f.write_line(&line);
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "jfconnect-service.log",
                "jfconnect-service.log.1",
                "jfconnect-service.log.2",
                "jfconnect-service.log.3"
            ]
        );
        for n in &names {
            let len = std::fs::metadata(dir.path().join(n)).unwrap().len();
            assert!(len <= 1000 + 100, "{n}: {len} bytes");
        }
    }

    #[test]
    fn trace_ids_are_sixteen_hex_digits() {
        let t = new_trace_id();
        assert_eq!(t.len(), 16);
        assert!(is_trace_id(&t));
        assert!(!is_trace_id("not-hex"));
        assert!(!is_trace_id(&"a".repeat(33)));
    }
}
