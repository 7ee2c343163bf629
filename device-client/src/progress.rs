//! Progress of a long operation: a bar on a terminal, JSON lines with `--json`, or nothing.

use std::io::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

/// Where progress goes.
#[derive(Debug)]
pub struct Progress {
    mode: Mode,
    last_json: Mutex<Option<Instant>>,
}

#[derive(Debug)]
enum Mode {
    Quiet,
    Json,
    Bar(ProgressBar),
}

/// JSON byte-progress lines at most this often.
const JSON_INTERVAL: Duration = Duration::from_millis(200);

impl Progress {
    /// No output.
    pub fn quiet() -> Self {
        Self::with(Mode::Quiet)
    }

    /// JSON lines on stdout.
    pub fn json() -> Self {
        Self::with(Mode::Json)
    }

    /// A bar on stderr if it is a terminal, else nothing.
    pub fn terminal() -> Self {
        let bar = ProgressBar::new(0);
        if bar.is_hidden() {
            return Self::quiet();
        }
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:30} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        Self::with(Mode::Bar(bar))
    }

    fn with(mode: Mode) -> Self {
        Self {
            mode,
            last_json: Mutex::new(None),
        }
    }

    /// Whether events are JSON lines.
    pub fn is_json(&self) -> bool {
        matches!(self.mode, Mode::Json)
    }

    /// A step of the operation (`{"event": NAME, …fields}`).
    pub fn event(&self, name: &str, fields: Value) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Json => {
                let mut line = json!({ "event": name });
                if let (Some(obj), Value::Object(extra)) = (line.as_object_mut(), fields) {
                    obj.extend(extra);
                }
                emit(&line);
            }
            Mode::Bar(bar) => bar.set_message(name.replace('_', " ")),
        }
    }

    /// The byte total of the download phase.
    pub fn start_bytes(&self, artifact: &str, total: u64) {
        match &self.mode {
            Mode::Bar(bar) => {
                bar.set_length(total);
                bar.set_position(0);
                bar.set_message(artifact.to_string());
            }
            Mode::Json => self.event("download", json!({ "artifact": artifact, "total": total })),
            Mode::Quiet => {}
        }
    }

    /// Bytes verified so far (and per source kind, for JSON).
    pub fn bytes(&self, done: u64, total: u64, by_kind: &Value) {
        match &self.mode {
            Mode::Bar(bar) => bar.set_position(done),
            Mode::Json => {
                let mut last = self.last_json.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                if done < total && last.is_some_and(|l| now.duration_since(l) < JSON_INTERVAL) {
                    return;
                }
                *last = Some(now);
                emit(&json!({
                    "event": "progress", "done": done, "total": total, "bytes_by_kind": by_kind
                }));
            }
            Mode::Quiet => {}
        }
    }

    /// The operation ended.
    pub fn finish(&self) {
        if let Mode::Bar(bar) = &self.mode {
            bar.finish_and_clear();
        }
    }
}

fn emit(line: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, line);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}
