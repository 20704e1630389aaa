//! The deployment files in `deploy/` agree with the binary and the server.
//!
//! Every file under `deploy/` is parsed (YAML, JSON, the Dockerfile and
//! `haproxy.cfg` with light parsers) and checked against what the code says:
//! flags and `CONFAB_*` variables against `confab serve --help` of the built
//! binary, the effective settings against `confab serve --print-config` run
//! with each deployment's own arguments and environment, metric and label
//! names against `crates/server/src/metrics.rs`, error codes against
//! `confab_proto::ErrorCode`, and the files against each other (ports,
//! probe paths, service names, mounted paths, Kubernetes object references).
//! The Dockerfile's HEALTHCHECK is run against a real `confab serve`.
//!
//! Each test gathers every disagreement it finds and fails with the list.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use confab_server::Config;
use regex::Regex;
use serde::Deserialize as _;
use serde_json::Value;

/// A regular expression, compiled once.
macro_rules! re {
    ($pattern:literal) => {{
        static RE: OnceLock<Regex> = OnceLock::new();
        RE.get_or_init(|| Regex::new($pattern).expect("a valid regex"))
    }};
}

/// The one port a Confab node serves everything on.
const PORT: u16 = 8080;
/// Source of truth for metric names, read at compile time.
const METRICS_RS: &str = include_str!("../../../server/src/metrics.rs");
/// Series that Prometheus itself makes for every target.
const PROMETHEUS_SERIES: &[&str] = &["up"];
/// Labels Prometheus adds to every scraped series.
const TARGET_LABELS: &[&str] = &["job", "instance"];
/// The Kubernetes kinds the manifests must contain.
const K8S_KINDS: &[&str] = &[
    "ConfigMap",
    "Secret",
    "Deployment",
    "Service",
    "PodDisruptionBudget",
    "HorizontalPodAutoscaler",
];

// ---------------------------------------------------------------------------
// Collecting problems

/// Every disagreement a test finds, reported together.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            self.0.push(msg());
        }
    }

    fn push(&mut self, msg: String) {
        self.0.push(msg);
    }

    fn finish(self, what: &str) {
        assert!(
            self.0.is_empty(),
            "{what}: {} problem(s) in deploy/:\n  - {}\n",
            self.0.len(),
            self.0.join("\n  - ")
        );
    }
}

// ---------------------------------------------------------------------------
// Reading deploy/

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn deploy_dir() -> PathBuf {
    repo_root().join("deploy")
}

/// Every file under deploy/, by path relative to it ("k8s/service.yaml").
fn deploy_files() -> &'static BTreeMap<String, String> {
    static FILES: OnceLock<BTreeMap<String, String>> = OnceLock::new();
    FILES.get_or_init(|| {
        fn walk(dir: &Path, base: &Path, out: &mut BTreeMap<String, String>) {
            let entries =
                std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
            for entry in entries {
                let path = entry.expect("dir entry").path();
                if path.is_dir() {
                    walk(&path, base, out);
                } else {
                    let rel = path
                        .strip_prefix(base)
                        .expect("under deploy/")
                        .to_string_lossy()
                        .replace('\\', "/");
                    let text = std::fs::read_to_string(&path)
                        .unwrap_or_else(|e| panic!("deploy/{rel} is not UTF-8 text: {e}"));
                    out.insert(rel, text);
                }
            }
        }
        let base = deploy_dir();
        let mut out = BTreeMap::new();
        walk(&base, &base, &mut out);
        assert!(!out.is_empty(), "deploy/ is empty");
        out
    })
}

fn file(rel: &str) -> &'static str {
    deploy_files()
        .get(rel)
        .unwrap_or_else(|| panic!("deploy/{rel} is missing"))
}

/// What kind of file a path under deploy/ is, or None if no check knows it.
fn kind_of(rel: &str) -> Option<&'static str> {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    if name == "Dockerfile" {
        Some("dockerfile")
    } else if name == "haproxy.cfg" {
        Some("haproxy")
    } else if name.ends_with(".yaml") || name.ends_with(".yml") {
        Some("yaml")
    } else if name.ends_with(".json") {
        Some("json")
    } else if name.ends_with(".md") {
        Some("markdown")
    } else {
        None
    }
}

/// All documents of a YAML file (merge keys applied) as JSON values.
fn yaml_docs(rel: &str) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(file(rel)).enumerate() {
        let mut v = serde_yaml_ng::Value::deserialize(doc)
            .map_err(|e| format!("deploy/{rel}: document {i} is not valid YAML: {e}"))?;
        v.apply_merge()
            .map_err(|e| format!("deploy/{rel}: document {i}: bad merge key: {e}"))?;
        let j: Value = serde_yaml_ng::from_value(v).map_err(|e| {
            format!("deploy/{rel}: document {i} does not map to JSON (non-string keys?): {e}")
        })?;
        if !j.is_null() {
            out.push(j);
        }
    }
    Ok(out)
}

fn yaml(rel: &str) -> Value {
    let docs = yaml_docs(rel).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        docs.len(),
        1,
        "deploy/{rel}: expected one YAML document, found {}",
        docs.len()
    );
    docs.into_iter().next().expect("one document")
}

fn json(rel: &str) -> Value {
    serde_json::from_str(file(rel)).unwrap_or_else(|e| panic!("deploy/{rel}: invalid JSON: {e}"))
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

/// A string, or a number written without quotes, as text.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The array at a JSON pointer; empty if there is none.
fn items<'a>(v: &'a Value, ptr: &str) -> std::slice::Iter<'a, Value> {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
        .iter()
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(scalar).collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// The binary

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_confab")
}

/// What `confab serve --help` says the binary accepts.
struct Help {
    flags: BTreeSet<String>,
    envs: BTreeSet<String>,
}

fn help() -> &'static Help {
    static HELP: OnceLock<Help> = OnceLock::new();
    HELP.get_or_init(|| {
        let out = Command::new(bin())
            .args(["serve", "--help"])
            .env_clear()
            .output()
            .expect("run confab serve --help");
        assert!(out.status.success(), "confab serve --help failed: {out:?}");
        let text = String::from_utf8(out.stdout).expect("utf8 help");
        // Option lines: "  -l, --listen <ADDR>" or "      --listen <ADDR>".
        let flags: BTreeSet<String> = re!(r"(?m)^[ \t]*(?:-[A-Za-z0-9], )?(--[a-z0-9-]+)")
            .captures_iter(&text)
            .map(|c| c[1].to_string())
            .collect();
        let envs = env_names(&text);
        assert!(
            flags.contains("--listen") && envs.contains("CONFAB_LISTEN"),
            "could not read flags and [env: CONFAB_...] from `confab serve --help`:\n{text}"
        );
        Help { flags, envs }
    })
}

/// Every `CONFAB_*` name in a text (whole words: not `XCONFAB_Y`).
fn env_names(text: &str) -> BTreeSet<String> {
    re!(r"\bCONFAB_[A-Z0-9_]+")
        .find_iter(text)
        .map(|m| m.as_str().to_string())
        .collect()
}

/// Checks `confab` arguments (starting with the subcommand) against the help.
fn check_args(p: &mut Problems, what: &str, args: &[String]) {
    p.check(args.first().map(String::as_str) == Some("serve"), || {
        format!("{what}: arguments {args:?} do not start with the `serve` subcommand")
    });
    for a in args.iter().skip(1) {
        if let Some(flag) = a
            .strip_prefix("--")
            .map(|f| f.split('=').next().unwrap_or(f))
        {
            let flag = format!("--{flag}");
            p.check(help().flags.contains(&flag), || {
                format!(
                    "{what}: flag {flag} is not one `confab serve --help` lists ({})",
                    help().flags.iter().cloned().collect::<Vec<_>>().join(" ")
                )
            });
        }
    }
}

/// Runs `confab ARGS --print-config` with exactly `env` and returns the
/// effective configuration the server would run with.
fn effective_config(args: &[String], env: &BTreeMap<String, String>) -> Result<Config, String> {
    let out = Command::new(bin())
        .env_clear()
        .envs(env)
        .args(args)
        .arg("--print-config")
        .output()
        .map_err(|e| format!("running confab: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`confab {} --print-config` with env {:?} failed: {}",
            args.join(" "),
            env.keys().collect::<Vec<_>>(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8(out.stdout).map_err(|e| format!("print-config: {e}"))?;
    toml::from_str(&text).map_err(|e| format!("print-config output does not parse: {e}\n{text}"))
}

/// The server's settings with nothing set.
fn defaults() -> &'static Config {
    static DEFAULTS: OnceLock<Config> = OnceLock::new();
    DEFAULTS.get_or_init(|| {
        effective_config(&["serve".to_string()], &BTreeMap::new()).expect("default config")
    })
}

/// Checks what every cluster node must be configured with.
fn check_node_config(p: &mut Problems, what: &str, c: &Config) {
    p.check(c.listen.port() == PORT, || {
        format!(
            "{what}: listens on {} but every file says port {PORT}",
            c.listen
        )
    });
    p.check(c.listen.ip().is_unspecified(), || {
        format!(
            "{what}: listens on {}, unreachable from outside the container",
            c.listen
        )
    });
    p.check(
        c.database
            .as_deref()
            .is_some_and(|d| d.starts_with("postgres://") || d.starts_with("postgresql://")),
        || {
            format!(
                "{what}: database is {:?}, not a postgres:// URL",
                c.database
            )
        },
    );
    p.check(
        c.bus.as_deref().is_some_and(|b| b.starts_with("nats://")),
        || format!("{what}: bus is {:?}, not a nats:// URL", c.bus),
    );
    p.check(c.node_id.as_deref().is_some_and(|n| !n.is_empty()), || {
        format!("{what}: no node id")
    });
}

/// Seconds SIGTERM may take at most: connections, then the commit queue,
/// each up to `shutdown_grace_s`.
fn drain_seconds() -> u64 {
    2 * defaults().shutdown_grace_s
}

// ---------------------------------------------------------------------------
// Metrics

/// A metric the server exports: its type and label names.
struct Metric {
    kind: &'static str,
    labels: BTreeSet<String>,
}

/// The metrics registered in crates/server/src/metrics.rs.
fn exported_metrics() -> &'static BTreeMap<String, Metric> {
    static METRICS: OnceLock<BTreeMap<String, Metric>> = OnceLock::new();
    METRICS.get_or_init(|| {
        // `counter!("name", "label" => value, ...)`, one per call site.
        let out: BTreeMap<String, Metric> =
            re!(r#"\b(counter|gauge|histogram)!\(\s*"([^"]+)"([^)]*)\)"#)
                .captures_iter(METRICS_RS)
                .map(|c| {
                    let kind = match &c[1] {
                        "counter" => "counter",
                        "gauge" => "gauge",
                        _ => "histogram",
                    };
                    let labels = re!(r#""([^"]+)"\s*=>"#)
                        .captures_iter(&c[3])
                        .map(|l| l[1].to_string())
                        .collect();
                    (c[2].to_string(), Metric { kind, labels })
                })
                .collect();
        assert!(
            out.len() >= 5 && out.contains_key("confab_connections"),
            "could not read metric names from crates/server/src/metrics.rs: {:?}",
            out.keys().collect::<Vec<_>>()
        );
        out
    })
}

/// A label matcher: label, operator (`=`, `!=`, `=~`, `!~`), value.
type Matcher = (String, String, String);

/// Names and labels a PromQL expression refers to.
#[derive(Debug, Default)]
struct PromRefs {
    /// Metric names, each with the label matchers written right after it.
    selectors: Vec<(String, Vec<Matcher>)>,
    /// Labels in by/without/on/ignoring/group_left/group_right lists.
    grouping: Vec<String>,
}

/// Words that are PromQL, not metric names, when not followed by `(`.
const PROMQL_WORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// What a PromQL expression (Grafana `$variables` allowed) refers to, found
/// by patterns, not parsed: every `{...}` selector must follow a metric
/// name; a metric name is any other identifier that is not a PromQL word
/// and not called like a function. Syntax errors are Prometheus's to find;
/// this only reads the names.
fn promql_refs(expr: &str) -> Result<PromRefs, String> {
    let mut refs = PromRefs::default();
    // Braces and their matchers, read on the original text.
    let selector = re!(r#"([A-Za-z_:][\w:]*)?\s*\{([^}]*)\}"#);
    let matcher = re!(r#"(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)""#);
    let mut matched = BTreeMap::new();
    for c in selector.captures_iter(expr) {
        let Some(name) = c.get(1) else {
            return Err(format!(
                "selector without a metric name in {expr:?}: name the metric"
            ));
        };
        let matchers = matcher
            .captures_iter(&c[2])
            .map(|m| (m[1].to_string(), m[2].to_string(), m[3].to_string()))
            .collect();
        matched.insert(name.start(), matchers);
    }
    for c in re!(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
        .captures_iter(expr)
    {
        refs.grouping.extend(
            c[1].split(',')
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty()),
        );
    }
    // Names: blank out strings, selector bodies, ranges and grouping lists
    // (same length, so positions still match `matched`), then take every
    // identifier not glued to a word character, `.` or `$` before it (units
    // like `5m`, numbers, variables) and not followed by `(` (functions).
    let mut blank = expr.to_string();
    for pattern in [
        re!(r#""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`"#),
        re!(r"\{[^}]*\}|\[[^\]]*\]"),
        re!(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"),
    ] {
        blank = pattern
            .replace_all(&blank, |c: &regex::Captures| " ".repeat(c[0].len()))
            .into_owned();
    }
    for name in re!(r"[A-Za-z_:][\w:]*").find_iter(&blank) {
        let before = blank[..name.start()].chars().next_back();
        let after = blank[name.end()..].trim_start().chars().next();
        let glued = before.is_some_and(|c| c.is_alphanumeric() || "_.$:".contains(c));
        if !glued && after != Some('(') && !PROMQL_WORDS.contains(&name.as_str()) {
            let matchers = matched.remove(&name.start()).unwrap_or_default();
            refs.selectors.push((name.as_str().to_string(), matchers));
        }
    }
    Ok(refs)
}

/// Checks that an expression uses only exported metrics, their labels, and
/// real error codes. Returns the `job` values it filters on.
fn check_promql(p: &mut Problems, what: &str, expr: &str) -> BTreeSet<String> {
    let mut jobs = BTreeSet::new();
    let refs = match promql_refs(expr) {
        Ok(r) => r,
        Err(e) => {
            p.push(format!("{what}: {e}"));
            return jobs;
        }
    };
    let metrics = exported_metrics();
    let exported = || metrics.keys().cloned().collect::<Vec<_>>().join(", ");
    p.check(!refs.selectors.is_empty(), || {
        format!("{what}: no metric in {expr:?}")
    });
    let all_labels: BTreeSet<String> = metrics
        .values()
        .flat_map(|m| m.labels.iter().cloned())
        .chain(TARGET_LABELS.iter().map(|s| s.to_string()))
        .chain(["le".to_string()])
        .collect();
    for (name, matchers) in &refs.selectors {
        let (base, metric) = if PROMETHEUS_SERIES.contains(&name.as_str()) {
            (name.as_str(), None)
        } else if let Some(m) = metrics.get(name) {
            (name.as_str(), Some(m))
        } else if let Some((base, m)) = ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            let base = name.strip_suffix(suffix)?;
            metrics
                .get(base)
                .filter(|m| m.kind == "histogram")
                .map(|m| (base, m))
        }) {
            (base, Some(m))
        } else {
            p.push(format!(
                "{what}: metric {name} is not exported by crates/server/src/metrics.rs \
                 (exported: {}; histograms also as _bucket, _sum, _count)",
                exported()
            ));
            continue;
        };
        if metric.is_some_and(|m| m.kind == "histogram") {
            p.check(name != base, || {
                format!(
                    "{what}: histogram {name} is only exported as {name}_bucket, _sum and _count"
                )
            });
        }
        for (label, op, value) in matchers {
            let allowed = metric.is_some_and(|m| m.labels.contains(label))
                || TARGET_LABELS.contains(&label.as_str())
                || (label == "le" && name.ends_with("_bucket"));
            p.check(allowed, || {
                format!(
                    "{what}: {name} has no label {label:?} (it has {:?} and {TARGET_LABELS:?})",
                    metric.map(|m| m.labels.clone()).unwrap_or_default()
                )
            });
            if label == "job" && op == "=" {
                jobs.insert(value.clone());
            }
            let literal = value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '|');
            if label == "code" && literal {
                for code in value.split('|') {
                    p.check(
                        serde_json::from_value::<confab_proto::ErrorCode>(Value::String(
                            code.to_string(),
                        ))
                        .is_ok(),
                        || {
                            format!(
                                "{what}: {code:?} is not an error code (confab_proto::ErrorCode)"
                            )
                        },
                    );
                }
            }
        }
    }
    for label in &refs.grouping {
        p.check(all_labels.contains(label), || {
            format!(
                "{what}: groups by {label:?}, which no confab metric has (labels: {all_labels:?})"
            )
        });
    }
    jobs
}

// ---------------------------------------------------------------------------
// Dockerfile

/// One Dockerfile instruction, continuation lines joined.
struct Instruction {
    op: String,
    args: String,
}

/// The instructions, continuation lines joined (comments between them
/// dropped, as Docker does).
fn dockerfile() -> Vec<Instruction> {
    let joined = re!(r"\\[ \t]*\n(?:[ \t]*(?:#[^\n]*)?\n)*").replace_all(file("Dockerfile"), " ");
    re!(r"(?m)^[ \t]*([A-Za-z]+)[ \t]+(.*)$")
        .captures_iter(&joined)
        .map(|c| Instruction {
            op: c[1].to_ascii_uppercase(),
            args: c[2].trim().to_string(),
        })
        .collect()
}

/// An exec-form (JSON array) argument list.
fn exec_form(what: &str, args: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(args)
        .unwrap_or_else(|e| panic!("{what}: not an exec-form JSON array ({e}): {args}"));
    v.as_array()
        .unwrap_or_else(|| panic!("{what}: not a JSON array: {args}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("{what}: non-string in {args}"))
                .to_string()
        })
        .collect()
}

/// The final stage's instructions of `op`.
fn final_stage<'a>(all: &'a [Instruction], op: &str) -> Vec<&'a Instruction> {
    let last_from = all.iter().rposition(|i| i.op == "FROM").unwrap_or(0);
    all[last_from..].iter().filter(|i| i.op == op).collect()
}

fn docker_entrypoint() -> Vec<String> {
    let all = dockerfile();
    let e = final_stage(&all, "ENTRYPOINT");
    let e = e.last().expect("deploy/Dockerfile has no ENTRYPOINT");
    exec_form("Dockerfile ENTRYPOINT", &e.args)
}

fn docker_cmd() -> Vec<String> {
    let all = dockerfile();
    let c = final_stage(&all, "CMD");
    let c = c.last().expect("deploy/Dockerfile has no CMD");
    exec_form("Dockerfile CMD", &c.args)
}

/// The HEALTHCHECK command (exec form after `CMD`).
fn docker_healthcheck() -> Vec<String> {
    let all = dockerfile();
    let h = final_stage(&all, "HEALTHCHECK");
    let h = h.last().expect("deploy/Dockerfile has no HEALTHCHECK");
    let (_, cmd) = h
        .args
        .split_once("CMD ")
        .expect("HEALTHCHECK ... CMD [...]");
    exec_form("Dockerfile HEALTHCHECK", cmd.trim())
}

/// The user id of the final stage's USER.
fn docker_uid() -> Option<u64> {
    let all = dockerfile();
    let u = final_stage(&all, "USER");
    u.last()?.args.split(':').next()?.parse().ok()
}

// ---------------------------------------------------------------------------
// Compose

/// deploy/compose.yaml as far as the checks read it. Serde takes each of
/// the shapes compose allows (a map or a `KEY=VALUE` list, a string or a
/// list, short or long syntax); a shape it does not know fails the test.
#[derive(serde::Deserialize)]
struct Compose {
    services: BTreeMap<String, Service>,
    #[serde(default)]
    volumes: BTreeMap<String, Option<Value>>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Service {
    image: Option<String>,
    build: Option<Build>,
    entrypoint: Option<Words>,
    command: Option<Words>,
    environment: Option<Env>,
    depends_on: Option<DependsOn>,
    volumes: Vec<Mount>,
    healthcheck: Option<Healthcheck>,
    stop_grace_period: Option<String>,
    ports: Vec<Port>,
    expose: Vec<Port>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Build {
    dockerfile: Option<String>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Healthcheck {
    test: Option<Words>,
}

/// A command: one string (split on whitespace) or a list of words.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Words {
    Line(String),
    List(Vec<String>),
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Env {
    Map(BTreeMap<String, Value>),
    List(Vec<String>),
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum DependsOn {
    List(Vec<String>),
    Map(BTreeMap<String, Dependency>),
}

#[derive(serde::Deserialize)]
struct Dependency {
    condition: Option<String>,
}

/// A volume: `source:target[:mode]`, or the long syntax.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Mount {
    Short(String),
    Long {
        #[serde(default)]
        source: String,
        target: String,
    },
}

/// A port: `[host:]container[/proto]` (string or number), or the long syntax.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Port {
    Long { target: Value },
    Short(Value),
}

impl Words {
    fn words(&self) -> Vec<String> {
        match self {
            Words::Line(line) => line.split_whitespace().map(str::to_string).collect(),
            Words::List(words) => words.clone(),
        }
    }
}

impl Service {
    fn env(&self) -> BTreeMap<String, String> {
        match &self.environment {
            Some(Env::Map(m)) => m
                .iter()
                .map(|(k, v)| (k.clone(), scalar(v).unwrap_or_default()))
                .collect(),
            Some(Env::List(l)) => l
                .iter()
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (k.to_string(), v.to_string())
                })
                .collect(),
            None => BTreeMap::new(),
        }
    }

    /// depends_on as service -> condition.
    fn depends(&self) -> BTreeMap<String, String> {
        let started = || "service_started".to_string();
        match &self.depends_on {
            Some(DependsOn::List(l)) => l.iter().map(|k| (k.clone(), started())).collect(),
            Some(DependsOn::Map(m)) => m
                .iter()
                .map(|(k, d)| (k.clone(), d.condition.clone().unwrap_or_else(started)))
                .collect(),
            None => BTreeMap::new(),
        }
    }

    /// Volumes as (source, target).
    fn mounts(&self) -> Vec<(String, String)> {
        self.volumes
            .iter()
            .map(|m| match m {
                Mount::Short(s) => {
                    let mut parts = s.split(':');
                    let src = parts.next().unwrap_or_default().to_string();
                    let dst = parts.next().unwrap_or(&src).to_string();
                    (src, dst)
                }
                Mount::Long { source, target } => (source.clone(), target.clone()),
            })
            .collect()
    }

    fn healthcheck_test(&self) -> Option<String> {
        let test = self.healthcheck.as_ref()?.test.as_ref()?;
        Some(test.words().join(" "))
    }
}

impl Port {
    /// The container side.
    fn container(&self) -> String {
        match self {
            Port::Long { target } => scalar(target).unwrap_or_default(),
            Port::Short(p) => {
                let p = scalar(p).unwrap_or_default();
                let last = p.rsplit(':').next().unwrap_or_default();
                last.split('/').next().unwrap_or_default().to_string()
            }
        }
    }
}

fn compose() -> Compose {
    serde_json::from_value(yaml("compose.yaml"))
        .unwrap_or_else(|e| panic!("deploy/compose.yaml: {e}"))
}

/// Services running the image built from deploy/Dockerfile.
fn confab_services(c: &Compose) -> BTreeMap<&str, &Service> {
    c.services
        .iter()
        .filter(|(_, s)| {
            s.build
                .as_ref()
                .and_then(|b| b.dockerfile.as_deref())
                .is_some_and(|d| d.ends_with("deploy/Dockerfile"))
                || s.image.as_deref().is_some_and(|i| i.starts_with("confab"))
        })
        .map(|(k, v)| (k.as_str(), v))
        .collect()
}

/// The first service whose image starts with `prefix`.
fn service_with_image<'a>(c: &'a Compose, prefix: &str) -> Option<(&'a String, &'a Service)> {
    c.services
        .iter()
        .find(|(_, s)| s.image.as_deref().is_some_and(|i| i.starts_with(prefix)))
}

/// "30s", "1m30s", "1h", "500ms"; bare numbers are `bare_unit` seconds.
fn parse_duration(s: &str, bare_unit: f64) -> Option<f64> {
    let s = s.trim();
    if let Ok(n) = s.parse::<f64>() {
        return Some(n * bare_unit);
    }
    let whole = re!(r"^(?:\d+(?:\.\d+)?(?:us|ms|s|m|h|d))+$");
    whole.is_match(s).then(|| {
        re!(r"(\d+(?:\.\d+)?)(us|ms|s|m|h|d)")
            .captures_iter(s)
            .map(|c| {
                let scale = match &c[2] {
                    "us" => 1e-6,
                    "ms" => 1e-3,
                    "s" => 1.0,
                    "m" => 60.0,
                    "h" => 3600.0,
                    _ => 86400.0,
                };
                c[1].parse::<f64>().unwrap_or(0.0) * scale
            })
            .sum()
    })
}

// ---------------------------------------------------------------------------
// HAProxy

struct Section {
    kind: String,
    name: String,
    lines: Vec<Vec<String>>,
}

/// Sections start at the left margin, their directives are indented.
fn haproxy() -> Vec<Section> {
    let mut out: Vec<Section> = Vec::new();
    for (n, raw) in file("haproxy.cfg").lines().enumerate() {
        let line = raw.split('#').next().unwrap_or_default();
        let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        let Some(first) = words.first() else { continue };
        if !raw.starts_with(char::is_whitespace) {
            out.push(Section {
                kind: first.clone(),
                name: words.get(1).cloned().unwrap_or_default(),
                lines: Vec::new(),
            });
        } else {
            let section = out.last_mut().unwrap_or_else(|| {
                panic!(
                    "deploy/haproxy.cfg:{}: directive outside any section",
                    n + 1
                )
            });
            section.lines.push(words);
        }
    }
    out
}

fn directive<'a>(s: &'a Section, words: &[&str]) -> Option<&'a [String]> {
    s.lines
        .iter()
        .find(|l| l.len() >= words.len() && l.iter().zip(words).all(|(a, b)| a == b))
        .map(|l| &l[words.len()..])
}

// ---------------------------------------------------------------------------
// Kubernetes

fn k8s_objects() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for rel in deploy_files().keys() {
        if rel.starts_with("k8s/") && kind_of(rel) == Some("yaml") {
            for doc in yaml_docs(rel).unwrap_or_else(|e| panic!("{e}")) {
                out.push((rel.clone(), doc));
            }
        }
    }
    out
}

fn k8s_by_kind<'a>(objs: &'a [(String, Value)], kind: &str) -> Vec<&'a Value> {
    objs.iter()
        .filter(|(_, o)| str_at(o, "/kind") == Some(kind))
        .map(|(_, o)| o)
        .collect()
}

fn k8s_name(o: &Value) -> &str {
    str_at(o, "/metadata/name").unwrap_or("<unnamed>")
}

/// Resolves a container port (number or name) to a number.
fn resolve_port(container: &Value, port: &Value) -> Option<u64> {
    match port {
        Value::Number(n) => n.as_u64(),
        Value::String(name) => container
            .get("ports")?
            .as_array()?
            .iter()
            .find(|p| str_at(p, "/name") == Some(name))?
            .get("containerPort")?
            .as_u64(),
        _ => None,
    }
}

fn labels_match(selector: Option<&Value>, labels: Option<&Value>) -> bool {
    let (Some(Value::Object(sel)), Some(Value::Object(labels))) = (selector, labels) else {
        return false;
    };
    !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

// ---------------------------------------------------------------------------
// Tests

#[test]
fn every_file_in_deploy_parses_and_has_a_check() {
    let mut p = Problems::default();
    for (rel, text) in deploy_files() {
        match kind_of(rel) {
            Some("yaml") => match yaml_docs(rel) {
                Ok(docs) => p.check(!docs.is_empty(), || format!("deploy/{rel}: no YAML document")),
                Err(e) => p.push(e),
            },
            Some("json") => {
                if let Err(e) = serde_json::from_str::<Value>(text) {
                    p.push(format!("deploy/{rel}: invalid JSON: {e}"));
                }
            }
            Some("dockerfile") => {
                let all = dockerfile();
                for i in &all {
                    const KNOWN: &[&str] = &[
                        "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY",
                        "ENTRYPOINT", "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD",
                        "STOPSIGNAL", "HEALTHCHECK", "SHELL",
                    ];
                    p.check(KNOWN.contains(&i.op.as_str()), || {
                        format!("deploy/Dockerfile: unknown instruction {} {}", i.op, i.args)
                    });
                }
                p.check(all.first().is_some_and(|i| i.op == "FROM"), || {
                    "deploy/Dockerfile: the first instruction is not FROM".into()
                });
            }
            Some("haproxy") => {
                let sections = haproxy();
                p.check(sections.iter().any(|s| s.kind == "frontend"), || {
                    "deploy/haproxy.cfg: no frontend section".into()
                });
            }
            Some("markdown") => p.check(!text.trim().is_empty(), || format!("deploy/{rel} is empty")),
            _ => p.push(format!(
                "deploy/{rel}: no check knows this kind of file; teach crates/confab/tests/it/deploy.rs about it"
            )),
        }
    }
    for required in [
        "Dockerfile",
        "compose.yaml",
        "haproxy.cfg",
        "prometheus.yml",
        "alerts.yml",
        "grafana/confab-dashboard.json",
    ] {
        p.check(deploy_files().contains_key(required), || {
            format!("deploy/{required} is missing")
        });
    }
    p.finish("parsing deploy/");
}

#[test]
fn every_confab_env_var_and_flag_mentioned_is_known_to_the_binary() {
    let mut p = Problems::default();
    for (rel, text) in deploy_files() {
        for name in env_names(text) {
            p.check(help().envs.contains(&name), || {
                format!(
                    "deploy/{rel}: {name} is not a variable `confab serve --help` lists ({})",
                    help().envs.iter().cloned().collect::<Vec<_>>().join(" ")
                )
            });
        }
        // Command lines written out in comments and docs: `confab serve --x`.
        for (n, line) in text.lines().enumerate() {
            let Some(at) = line.find("confab serve").or_else(|| line.find("serve --")) else {
                continue;
            };
            for word in line[at..].split_whitespace() {
                let word = word.trim_matches(|c: char| matches!(c, '`' | '"' | '\'' | ',' | ')'));
                if let Some(flag) = word.strip_prefix("--") {
                    let flag = format!("--{}", flag.split('=').next().unwrap_or(flag));
                    p.check(help().flags.contains(&flag), || {
                        format!(
                            "deploy/{rel}:{}: {flag} is not a `confab serve` flag",
                            n + 1
                        )
                    });
                }
            }
        }
    }
    p.finish("flags and CONFAB_* variables");
}

#[test]
fn the_dockerfile_agrees_with_the_binary() {
    let mut p = Problems::default();
    let all = dockerfile();
    let froms: Vec<&Instruction> = all.iter().filter(|i| i.op == "FROM").collect();
    p.check(froms.len() >= 2, || {
        "Dockerfile: not multi-stage (a builder and a runtime FROM)".into()
    });
    p.check(
        froms
            .last()
            .is_some_and(|f| f.args.starts_with("debian:bookworm-slim")),
        || "Dockerfile: the runtime stage is not debian:bookworm-slim".into(),
    );
    p.check(
        all.iter().any(|i| {
            i.op == "RUN" && i.args.contains("cargo build") && i.args.contains("-p confab")
        }),
        || "Dockerfile: no `cargo build ... -p confab`".into(),
    );
    p.check(
        all.iter()
            .any(|i| i.op == "RUN" && i.args.contains("ca-certificates")),
        || "Dockerfile: ca-certificates not installed".into(),
    );
    // What the builder copies from the context must exist (context = repo root).
    for i in all
        .iter()
        .filter(|i| i.op == "COPY" && !i.args.starts_with("--from"))
    {
        let words: Vec<&str> = i
            .args
            .split_whitespace()
            .filter(|w| !w.starts_with("--"))
            .collect();
        for src in &words[..words.len().saturating_sub(1)] {
            p.check(repo_root().join(src).exists(), || {
                format!("Dockerfile: COPY source {src} does not exist at the repository root (the build context)")
            });
        }
    }
    p.check(docker_uid() == Some(10001), || {
        format!("Dockerfile: USER is {:?}, expected uid 10001", docker_uid())
    });
    let expose: Vec<&Instruction> = final_stage(&all, "EXPOSE");
    p.check(
        expose.len() == 1 && expose[0].args.split('/').next() == Some(&PORT.to_string()),
        || format!("Dockerfile: EXPOSE is not exactly {PORT}"),
    );
    p.check(docker_entrypoint() == ["confab"], || {
        format!(
            "Dockerfile: ENTRYPOINT is {:?}, expected [\"confab\"]",
            docker_entrypoint()
        )
    });
    let cmd = docker_cmd();
    check_args(&mut p, "Dockerfile CMD", &cmd);
    let volumes: Vec<String> = final_stage(&all, "VOLUME")
        .iter()
        .flat_map(|v| {
            if v.args.starts_with('[') {
                exec_form("Dockerfile VOLUME", &v.args)
            } else {
                v.args.split_whitespace().map(str::to_string).collect()
            }
        })
        .collect();
    match effective_config(&cmd, &BTreeMap::new()) {
        Ok(c) => {
            p.check(
                c.listen.port() == PORT && c.listen.ip().is_unspecified(),
                || {
                    format!(
                        "Dockerfile CMD: listens on {}, expected 0.0.0.0:{PORT}",
                        c.listen
                    )
                },
            );
            let data = c.data_dir.to_string_lossy().to_string();
            p.check(volumes.contains(&data), || {
                format!("Dockerfile: data dir {data} is not a VOLUME ({volumes:?})")
            });
        }
        Err(e) => p.push(format!("Dockerfile CMD: {e}")),
    }
    let hc = docker_healthcheck().join(" ");
    p.check(
        hc.contains("/healthz") && hc.contains(&format!("/{PORT}")),
        || format!("Dockerfile: HEALTHCHECK does not probe /healthz on port {PORT}: {hc}"),
    );
    p.finish("deploy/Dockerfile");
}

/// Kills the server on every way out of the test.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a command with a deadline; true if it exited 0 in time.
fn run_with_deadline(argv: &[String], deadline: Duration) -> bool {
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("running {argv:?}: {e}"));
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.success();
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(unix)]
#[test]
fn the_image_healthcheck_passes_on_a_live_server_and_fails_on_a_dead_one() {
    let hc = docker_healthcheck();
    let target = format!("127.0.0.1/{PORT}");
    assert!(
        hc.iter().any(|a| a.contains(&target)),
        "Dockerfile HEALTHCHECK {hc:?} does not connect to {target}; update this test with it"
    );
    // The image's own command, on a free port and a temporary data dir.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = docker_cmd();
    for (flag, value) in [
        ("--listen", "127.0.0.1:0".to_string()),
        ("--data-dir", dir.path().to_string_lossy().to_string()),
    ] {
        let i = args
            .iter()
            .position(|a| a == flag)
            .unwrap_or_else(|| panic!("Dockerfile CMD has no {flag}"));
        args[i + 1] = value;
    }
    let mut cmd = Command::new(bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("CONFAB_") {
            cmd.env_remove(k);
        }
    }
    let mut server = Server(
        cmd.args(&args)
            .env("CONFAB_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn confab serve"),
    );
    let stdout = server.0.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("confab serve printed its address");
    let port: u16 = line
        .rsplit(':')
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    let probe: Vec<String> = hc
        .iter()
        .map(|a| a.replace(&target, &format!("127.0.0.1/{port}")))
        .collect();
    assert!(
        run_with_deadline(&probe, Duration::from_secs(10)),
        "the Dockerfile HEALTHCHECK {probe:?} failed against a running `confab {}`",
        args.join(" ")
    );
    drop(server);
    assert!(
        !run_with_deadline(&probe, Duration::from_secs(10)),
        "the Dockerfile HEALTHCHECK {probe:?} passed with no server running: it checks nothing"
    );
}

#[test]
fn compose_runs_three_nodes_on_postgres_and_nats_behind_haproxy() {
    let mut p = Problems::default();
    let c = compose();
    let all = &c.services;
    let nodes = confab_services(&c);
    let names: Vec<&str> = nodes.keys().copied().collect();
    p.check(
        names.len() >= 3 && names.iter().all(|n| n.starts_with("node-")),
        || {
            format!(
                "compose: confab services are {names:?}, expected node-1, node-2, node-3 (or more)"
            )
        },
    );
    // Every reference between services and to files holds.
    for (name, s) in all {
        for (dep, cond) in s.depends() {
            p.check(all.contains_key(&dep), || {
                format!("compose: {name} depends on unknown service {dep}")
            });
            if cond == "service_healthy" {
                let has_check = all
                    .get(&dep)
                    .is_some_and(|d| d.healthcheck.is_some() || nodes.contains_key(dep.as_str()));
                p.check(has_check, || {
                    format!("compose: {name} waits for {dep} to be healthy, but {dep} has no healthcheck")
                });
            }
        }
        for (src, dst) in s.mounts() {
            if src.starts_with('.') || src.starts_with('/') {
                p.check(deploy_dir().join(&src).exists(), || {
                    format!(
                        "compose: {name} mounts {src} (relative to deploy/), which does not exist"
                    )
                });
            } else {
                p.check(c.volumes.contains_key(&src), || {
                    format!("compose: {name} uses volume {src}, not declared under volumes:")
                });
            }
            p.check(dst.starts_with('/'), || {
                format!("compose: {name} mounts {src} at {dst:?}, not an absolute path")
            });
        }
    }
    let stop_limit = drain_seconds() as f64;
    let mut node_ids = BTreeSet::new();
    for (name, s) in &nodes {
        let what = format!("compose service {name}");
        if let Some(e) = s.entrypoint.as_ref().map(Words::words) {
            p.check(e == ["confab"], || {
                format!("{what}: entrypoint {e:?} is not [\"confab\"]")
            });
        }
        let args = s.command.as_ref().map_or_else(docker_cmd, Words::words);
        check_args(&mut p, &what, &args);
        let env = s.env();
        for k in env.keys().filter(|k| k.starts_with("CONFAB_")) {
            p.check(help().envs.contains(k), || {
                format!("{what}: unknown variable {k}")
            });
        }
        match effective_config(&args, &env) {
            Ok(cfg) => {
                check_node_config(&mut p, &what, &cfg);
                p.check(cfg.node_id.as_deref() == Some(*name), || {
                    format!("{what}: node id {:?} is not the service name", cfg.node_id)
                });
                node_ids.insert(cfg.node_id.clone());
                let host_port = |url: &str| {
                    let rest = url.split("://").nth(1)?;
                    let rest = rest.rsplit('@').next()?;
                    let hp = rest.split('/').next()?;
                    let (h, port) = hp.split_once(':')?;
                    Some((h.to_string(), port.to_string()))
                };
                let db = cfg.database.as_deref().and_then(host_port);
                p.check(
                    db.as_ref().is_some_and(|(h, port)| {
                        port == "5432"
                            && all
                                .get(h)
                                .and_then(|s| s.image.as_deref())
                                .is_some_and(|i| i.starts_with("postgres:16"))
                    }),
                    || {
                        format!(
                            "{what}: database {:?} is not the compose postgres:16 service on 5432",
                            cfg.database
                        )
                    },
                );
                let bus = cfg.bus.as_deref().and_then(host_port);
                p.check(
                    bus.as_ref().is_some_and(|(h, port)| {
                        port == "4222"
                            && all
                                .get(h)
                                .and_then(|s| s.image.as_deref())
                                .is_some_and(|i| i.starts_with("nats:2"))
                    }),
                    || {
                        format!(
                            "{what}: bus {:?} is not the compose nats:2 service on 4222",
                            cfg.bus
                        )
                    },
                );
                let data = cfg.data_dir.to_string_lossy().to_string();
                p.check(s.mounts().iter().any(|(_, dst)| *dst == data), || {
                    format!("{what}: nothing is mounted on the data dir {data} (read_only root)")
                });
            }
            Err(e) => p.push(format!("{what}: {e}")),
        }
        let deps = s.depends();
        for needed in ["postgres", "nats"] {
            p.check(
                deps.get(needed).map(String::as_str) == Some("service_healthy"),
                || format!("{what}: does not wait for {needed} to be healthy"),
            );
        }
        match s.healthcheck_test() {
            None => p.check(!docker_healthcheck().is_empty(), || {
                format!("{what}: no healthcheck here nor in the image")
            }),
            Some(test) => {
                p.check(
                    test.contains("/healthz") && test.contains(&PORT.to_string()),
                    || format!("{what}: healthcheck {test:?} does not probe /healthz on {PORT}"),
                );
            }
        }
        let grace = s
            .stop_grace_period
            .as_deref()
            .and_then(|d| parse_duration(d, 1.0))
            .unwrap_or(10.0);
        p.check(grace > stop_limit, || {
            format!("{what}: stop_grace_period {grace}s is not above the drain time {stop_limit}s (2 x shutdown_grace_s)")
        });
        for (key, ports) in [("ports", &s.ports), ("expose", &s.expose)] {
            for port in ports.iter().map(Port::container) {
                p.check(port == PORT.to_string(), || {
                    format!("{what}: {key} container port {port}, expected {PORT}")
                });
            }
        }
    }
    p.check(node_ids.len() == nodes.len(), || {
        "compose: two nodes share a node id".to_string()
    });

    let find = |prefix: &str| service_with_image(&c, prefix);
    match find("postgres:16") {
        Some((name, pg)) => {
            let test = pg.healthcheck_test().unwrap_or_default();
            p.check(test.contains("pg_isready"), || {
                format!("compose: {name} healthcheck {test:?} does not use pg_isready")
            });
            p.check(
                pg.mounts()
                    .iter()
                    .any(|(_, d)| d == "/var/lib/postgresql/data"),
                || format!("compose: {name} keeps its data in no volume"),
            );
        }
        None => p.push("compose: no postgres:16 service".into()),
    }
    match find("nats:2") {
        Some((name, nats)) => {
            let cmd = nats.command.as_ref().map(Words::words).unwrap_or_default();
            p.check(cmd.iter().any(|a| a == "-js" || a == "--jetstream"), || {
                format!("compose: {name} runs without JetStream (-js): {cmd:?}")
            });
            p.check(nats.healthcheck.is_some(), || {
                format!("compose: {name} has no healthcheck")
            });
        }
        None => p.push("compose: no nats:2 service".into()),
    }
    match find("haproxy") {
        Some((name, h)) => {
            p.check(
                h.mounts().iter().any(|(s, _)| s.ends_with("haproxy.cfg")),
                || format!("compose: {name} does not mount ./haproxy.cfg"),
            );
            let published: Vec<String> = h
                .ports
                .iter()
                .filter_map(|p| match p {
                    Port::Short(v) => scalar(v),
                    Port::Long { .. } => None,
                })
                .collect();
            p.check(
                published
                    .iter()
                    .any(|p| p.ends_with(&format!("{PORT}:{PORT}"))),
                || format!("compose: {name} does not publish port {PORT} ({published:?})"),
            );
        }
        None => p.push("compose: no haproxy service".into()),
    }
    for image in ["prom/prometheus", "grafana/grafana"] {
        p.check(find(image).is_some(), || {
            format!("compose: no {image} service")
        });
    }
    p.finish("deploy/compose.yaml");
}

#[test]
fn haproxy_balances_websockets_over_every_node_by_readiness() {
    let mut p = Problems::default();
    let sections = haproxy();
    let heartbeat = defaults().heartbeat_s as f64;
    let nodes: BTreeSet<String> = confab_services(&compose())
        .keys()
        .map(|n| format!("{n}:{PORT}"))
        .collect();
    let text = file("haproxy.cfg");
    p.check(!text.lines().any(|l| l.split('#').next().unwrap_or_default().contains("shutdown-sessions")), || {
        "haproxy.cfg: shutdown-sessions would cut WebSockets before a draining node closes them (1001)".into()
    });
    let defaults_s: Vec<&Section> = sections.iter().filter(|s| s.kind == "defaults").collect();
    let timeout = |s: &Section, which: &str| {
        directive(s, &["timeout", which])
            .or_else(|| {
                defaults_s
                    .iter()
                    .find_map(|d| directive(d, &["timeout", which]))
            })
            .and_then(|v| v.first())
            .and_then(|v| parse_duration(v, 0.001))
    };
    let frontends: Vec<&Section> = sections
        .iter()
        .filter(|s| s.kind == "frontend" || s.kind == "listen")
        .filter(|s| {
            s.lines.iter().any(|l| {
                l.first().map(String::as_str) == Some("bind")
                    && l.get(1)
                        .is_some_and(|a| a.rsplit(':').next() == Some(&PORT.to_string()))
            })
        })
        .collect();
    p.check(frontends.len() == 1, || {
        format!(
            "haproxy.cfg: {} frontends bind :{PORT}, expected one",
            frontends.len()
        )
    });
    let backend_name = frontends
        .first()
        .and_then(|f| directive(f, &["default_backend"]))
        .and_then(|v| v.first().cloned());
    let backend = sections
        .iter()
        .find(|s| s.kind == "backend" && Some(&s.name) == backend_name.as_ref());
    let Some(b) = backend else {
        p.push(format!(
            "haproxy.cfg: the :{PORT} frontend's default_backend {backend_name:?} is not a backend"
        ));
        p.finish("deploy/haproxy.cfg");
        return;
    };
    p.check(
        directive(b, &["balance"])
            .and_then(|v| v.first())
            .map(String::as_str)
            == Some("leastconn"),
        || {
            format!(
                "haproxy.cfg: backend {} does not `balance leastconn`",
                b.name
            )
        },
    );
    p.check(
        directive(b, &["option", "httpchk"]).is_some_and(|v| v.iter().any(|w| w == "/readyz")),
        || {
            format!(
                "haproxy.cfg: backend {} does not `option httpchk GET /readyz`",
                b.name
            )
        },
    );
    let tunnel = timeout(b, "tunnel");
    p.check(tunnel.is_some_and(|t| t >= 3.0 * heartbeat), || {
        format!(
            "haproxy.cfg: timeout tunnel {tunnel:?}s is not at least three heartbeats ({}s)",
            3.0 * heartbeat
        )
    });
    for which in ["connect", "client", "server"] {
        p.check(timeout(b, which).is_some(), || {
            format!("haproxy.cfg: no timeout {which}")
        });
    }
    let default_server = directive(b, &["default-server"]).unwrap_or_default();
    let servers: Vec<&Vec<String>> = b
        .lines
        .iter()
        .filter(|l| l.first().map(String::as_str) == Some("server"))
        .collect();
    let addrs: BTreeSet<String> = servers.iter().filter_map(|l| l.get(2).cloned()).collect();
    p.check(addrs == nodes, || {
        format!(
            "haproxy.cfg: backend {} servers {addrs:?} are not the compose nodes {nodes:?}",
            b.name
        )
    });
    for s in &servers {
        p.check(s.iter().chain(default_server).any(|w| w == "check"), || {
            format!(
                "haproxy.cfg: server {} is not health-checked",
                s.get(1).cloned().unwrap_or_default()
            )
        });
    }
    let resolvers: Vec<&String> = sections
        .iter()
        .filter(|s| s.kind == "resolvers")
        .map(|s| &s.name)
        .collect();
    for l in b.lines.iter() {
        if let Some(i) = l.iter().position(|w| w == "resolvers") {
            p.check(l.get(i + 1).is_some_and(|r| resolvers.contains(&r)), || {
                format!(
                    "haproxy.cfg: uses resolvers {:?}, not defined",
                    l.get(i + 1)
                )
            });
        }
    }
    p.finish("deploy/haproxy.cfg");
}

#[test]
fn prometheus_scrapes_every_node_and_loads_the_alerts() {
    let mut p = Problems::default();
    let prom = yaml("prometheus.yml");
    let c = compose();
    let nodes: BTreeSet<String> = confab_services(&c)
        .keys()
        .map(|n| format!("{n}:{PORT}"))
        .collect();
    let jobs = items(&prom, "/scrape_configs").as_slice().to_vec();
    let confab_job = jobs
        .iter()
        .find(|j| str_at(j, "/job_name") == Some("confab"));
    match confab_job {
        Some(j) => {
            let targets: BTreeSet<String> = items(j, "/static_configs")
                .flat_map(|sc| strings(sc.get("targets")))
                .collect();
            p.check(targets == nodes, || {
                format!("prometheus.yml: job confab scrapes {targets:?}, not the compose nodes {nodes:?}")
            });
            let path = str_at(j, "/metrics_path").unwrap_or("/metrics");
            p.check(path == "/metrics", || {
                format!("prometheus.yml: metrics_path {path}")
            });
        }
        None => p.push("prometheus.yml: no scrape job named confab".into()),
    }
    // The rule files it loads are the ones compose mounts, and they include alerts.yml.
    let prom_service = service_with_image(&c, "prom/prometheus").map(|(_, s)| s);
    let mounts = prom_service.map(Service::mounts).unwrap_or_default();
    let rule_files = strings(prom.get("rule_files"));
    p.check(!rule_files.is_empty(), || {
        "prometheus.yml: no rule_files".into()
    });
    for rf in &rule_files {
        p.check(mounts.iter().any(|(_, dst)| dst == rf), || {
            format!(
                "prometheus.yml: rule file {rf} is not mounted by the compose prometheus service"
            )
        });
    }
    p.check(
        mounts
            .iter()
            .any(|(src, dst)| src.ends_with("alerts.yml") && rule_files.contains(dst)),
        || "prometheus.yml: alerts.yml is not mounted where rule_files looks".into(),
    );
    let config_arg = prom_service
        .and_then(|s| s.command.as_ref().map(Words::words))
        .unwrap_or_default()
        .into_iter()
        .find_map(|a| a.strip_prefix("--config.file=").map(str::to_string))
        .unwrap_or_else(|| "/etc/prometheus/prometheus.yml".into());
    p.check(
        mounts
            .iter()
            .any(|(src, dst)| src.ends_with("prometheus.yml") && *dst == config_arg),
        || format!("compose: prometheus.yml is not mounted at {config_arg}"),
    );
    p.finish("deploy/prometheus.yml");
}

#[test]
fn alert_rules_use_only_exported_metrics_and_are_documented() {
    let mut p = Problems::default();
    let alerts = yaml("alerts.yml");
    let scrape_jobs: BTreeSet<String> = items(&yaml("prometheus.yml"), "/scrape_configs")
        .filter_map(|j| str_at(j, "/job_name").map(str::to_string))
        .collect();
    let docs = std::fs::read_to_string(repo_root().join("docs/operations.md"))
        .expect("docs/operations.md");
    let alerts_section = docs
        .split("\n## ")
        .find(|s| s.starts_with("Metrics and alerts"))
        .unwrap_or_default();
    p.check(!alerts_section.is_empty(), || {
        "docs/operations.md has no \"## Metrics and alerts\" section".into()
    });
    let mut names = BTreeSet::new();
    let groups = items(&alerts, "/groups").as_slice().to_vec();
    p.check(!groups.is_empty(), || "alerts.yml: no groups".into());
    for g in &groups {
        for r in items(g, "/rules") {
            let Some(name) = str_at(r, "/alert") else {
                p.push(format!(
                    "alerts.yml: a rule without `alert:` (recording rules belong elsewhere): {r}"
                ));
                continue;
            };
            let what = format!("alerts.yml {name}");
            p.check(names.insert(name.to_string()), || {
                format!("{what}: defined twice")
            });
            match str_at(r, "/expr") {
                Some(expr) => {
                    for job in check_promql(&mut p, &what, expr) {
                        p.check(scrape_jobs.contains(&job), || {
                            format!("{what}: job {job:?} is not a scrape job in prometheus.yml")
                        });
                    }
                }
                None => p.push(format!("{what}: no expr")),
            }
            for field in ["/for", "/labels/severity", "/annotations/summary"] {
                p.check(r.pointer(field).is_some(), || format!("{what}: no {field}"));
            }
            p.check(alerts_section.contains(name), || {
                format!("{what}: not explained in docs/operations.md, \"Metrics and alerts\"")
            });
        }
    }
    for metric in exported_metrics().keys() {
        p.check(docs.contains(&format!("`{metric}")), || {
            format!("docs/operations.md does not describe the metric {metric} (crates/server/src/metrics.rs exports it)")
        });
    }
    p.finish("deploy/alerts.yml");
}

#[test]
fn the_grafana_dashboard_uses_only_exported_metrics_and_provisioned_datasources() {
    let mut p = Problems::default();
    let dash = json("grafana/confab-dashboard.json");
    // Provisioned datasources and dashboard folder.
    let mut uids = BTreeSet::new();
    let mut provider_paths = Vec::new();
    for rel in deploy_files()
        .keys()
        .filter(|r| r.starts_with("grafana/provisioning/"))
    {
        let v = yaml(rel);
        for ds in items(&v, "/datasources") {
            if let Some(uid) = str_at(ds, "/uid") {
                uids.insert(uid.to_string());
            }
            if str_at(ds, "/type") == Some("prometheus") {
                let url = str_at(ds, "/url").unwrap_or_default();
                let host = url
                    .split("://")
                    .nth(1)
                    .and_then(|r| r.split(':').next())
                    .unwrap_or_default();
                p.check(compose().services.contains_key(host), || {
                    format!("deploy/{rel}: datasource url {url} is not a compose service")
                });
            }
        }
        for prov in items(&v, "/providers") {
            if let Some(path) = str_at(prov, "/options/path") {
                provider_paths.push(path.to_string());
            }
        }
    }
    p.check(!uids.is_empty(), || {
        "grafana/provisioning: no datasource with a uid".into()
    });
    let grafana_mounts = service_with_image(&compose(), "grafana/grafana")
        .map(|(_, s)| s.mounts())
        .unwrap_or_default();
    p.check(
        grafana_mounts.iter().any(|(src, dst)| {
            src.ends_with("confab-dashboard.json")
                && provider_paths
                    .iter()
                    .any(|pp| dst.starts_with(&format!("{}/", pp.trim_end_matches('/'))))
        }),
        || {
            format!(
                "compose: the dashboard is not mounted under a provider path {provider_paths:?}"
            )
        },
    );
    p.check(
        grafana_mounts.iter().any(|(src, dst)| {
            src.ends_with("grafana/provisioning") && dst == "/etc/grafana/provisioning"
        }),
        || "compose: grafana/provisioning is not mounted at /etc/grafana/provisioning".into(),
    );

    for key in ["uid", "title", "schemaVersion", "panels"] {
        p.check(dash.get(key).is_some(), || format!("dashboard: no {key}"));
    }
    let ds_ok = |ds: Option<&Value>| {
        ds.and_then(|d| str_at(d, "/uid"))
            .is_some_and(|u| uids.contains(u))
    };
    let panels = items(&dash, "/panels").as_slice().to_vec();
    p.check(panels.len() >= 8, || {
        format!("dashboard: only {} panels", panels.len())
    });
    let mut ids = BTreeSet::new();
    let mut used = BTreeSet::new();
    let mut exprs = Vec::new();
    for panel in &panels {
        let title = str_at(panel, "/title").unwrap_or("<untitled>");
        let what = format!("dashboard panel {title:?}");
        if str_at(panel, "/type") == Some("row") {
            continue;
        }
        p.check(
            panel
                .get("id")
                .and_then(Value::as_u64)
                .is_some_and(|id| ids.insert(id)),
            || format!("{what}: missing or duplicate id"),
        );
        p.check(panel.get("gridPos").is_some(), || {
            format!("{what}: no gridPos")
        });
        p.check(ds_ok(panel.get("datasource")), || {
            format!(
                "{what}: datasource {:?} is not a provisioned uid {uids:?}",
                panel.get("datasource")
            )
        });
        let targets = items(panel, "/targets").as_slice().to_vec();
        p.check(!targets.is_empty(), || format!("{what}: no targets"));
        let mut ref_ids = BTreeSet::new();
        for t in &targets {
            let ref_id = str_at(t, "/refId").unwrap_or_default();
            p.check(
                !ref_id.is_empty() && ref_ids.insert(ref_id.to_string()),
                || format!("{what}: missing or duplicate refId {ref_id:?}"),
            );
            if t.get("datasource").is_some() {
                p.check(ds_ok(t.get("datasource")), || {
                    format!("{what} {ref_id}: datasource not provisioned")
                });
            }
            match str_at(t, "/expr") {
                Some(expr) => {
                    exprs.push(expr.to_string());
                    if let Ok(refs) = promql_refs(expr) {
                        used.extend(refs.selectors.into_iter().map(|(n, _)| n));
                    }
                    check_promql(&mut p, &format!("{what} {ref_id}"), expr);
                }
                None => p.push(format!("{what} {ref_id}: no expr")),
            }
        }
    }
    // Template variables: label_values(metric, label).
    let all_labels: BTreeSet<String> = exported_metrics()
        .values()
        .flat_map(|m| m.labels.iter().cloned())
        .chain(TARGET_LABELS.iter().map(|s| s.to_string()))
        .collect();
    let mut defined = BTreeSet::new();
    for var in items(&dash, "/templating/list") {
        let name = str_at(var, "/name").unwrap_or_default();
        defined.insert(name.to_string());
        let what = format!("dashboard variable {name:?}");
        if str_at(var, "/type") != Some("query") {
            continue;
        }
        p.check(ds_ok(var.get("datasource")), || {
            format!("{what}: datasource not provisioned")
        });
        let q = str_at(var, "/definition")
            .or_else(|| str_at(var, "/query/query"))
            .or_else(|| str_at(var, "/query"))
            .unwrap_or_default();
        match q
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
        {
            Some(inner) => {
                let (metric, label) = inner.rsplit_once(',').unwrap_or((inner, ""));
                check_promql(&mut p, &what, metric.trim());
                p.check(all_labels.contains(label.trim()), || {
                    format!(
                        "{what}: label {:?} in {q:?} is on no confab metric",
                        label.trim()
                    )
                });
            }
            None => {
                check_promql(&mut p, &what, q);
            }
        }
    }
    // Every $variable an expression uses is defined (or one of Grafana's $__).
    for expr in &exprs {
        let mut rest = expr.as_str();
        while let Some(i) = rest.find('$') {
            rest = &rest[i + 1..];
            let name: String = rest
                .trim_start_matches('{')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            p.check(name.starts_with("__") || defined.contains(&name), || {
                format!("dashboard: ${name} in {expr:?} is not a template variable")
            });
        }
    }
    // Panels cover the areas the server measures.
    for needed in [
        "confab_connections",
        "confab_messages_committed_total",
        "confab_frames_out_total",
        "confab_commit_batch_size_bucket",
        "confab_commit_seconds_bucket",
        "confab_send_to_delivery_seconds_bucket",
        "confab_commit_queue_depth",
        "confab_errors_total",
        "confab_slow_consumers_total",
    ] {
        p.check(used.contains(needed), || {
            format!("dashboard: no panel shows {needed}")
        });
    }
    p.finish("deploy/grafana");
}

#[test]
fn kubernetes_manifests_agree_with_the_binary_and_each_other() {
    let mut p = Problems::default();
    let objs = k8s_objects();
    let kinds: BTreeSet<&str> = objs
        .iter()
        .filter_map(|(_, o)| str_at(o, "/kind"))
        .collect();
    for kind in K8S_KINDS {
        p.check(kinds.contains(kind), || format!("k8s: no {kind}"));
    }
    for (rel, o) in &objs {
        let kind = str_at(o, "/kind").unwrap_or_default();
        p.check(
            str_at(o, "/apiVersion").is_some() && !kind.is_empty(),
            || format!("deploy/{rel}: an object without apiVersion/kind"),
        );
        p.check(o.pointer("/metadata/namespace").is_none(), || {
            format!(
                "deploy/{rel}: {kind} {} names a namespace; the manifests are namespace-agnostic",
                k8s_name(o)
            )
        });
    }
    let expect_api = |kind: &str, api: &str, p: &mut Problems| {
        for o in k8s_by_kind(&objs, kind) {
            p.check(str_at(o, "/apiVersion") == Some(api), || {
                format!(
                    "k8s: {kind} {} is {:?}, expected {api}",
                    k8s_name(o),
                    str_at(o, "/apiVersion")
                )
            });
        }
    };
    expect_api("Deployment", "apps/v1", &mut p);
    expect_api("PodDisruptionBudget", "policy/v1", &mut p);
    expect_api("HorizontalPodAutoscaler", "autoscaling/v2", &mut p);

    let config_maps = k8s_by_kind(&objs, "ConfigMap");
    let secrets = k8s_by_kind(&objs, "Secret");
    for cm in &config_maps {
        for key in cm
            .get("data")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            p.check(
                !key.starts_with("CONFAB_") || help().envs.contains(key),
                || {
                    format!(
                        "k8s ConfigMap {}: {key} is not a variable the binary knows",
                        k8s_name(cm)
                    )
                },
            );
        }
    }
    for s in &secrets {
        let values: Vec<String> = s
            .get("stringData")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(_, v)| scalar(v))
            .collect();
        p.check(!values.is_empty(), || {
            format!("k8s Secret {}: no stringData", k8s_name(s))
        });
        for v in &values {
            p.check(v.contains("PLACEHOLDER") || v.contains("CHANGE-ME"), || {
                format!(
                    "k8s Secret {}: value {v:?} is not marked as a placeholder",
                    k8s_name(s)
                )
            });
        }
    }

    let deployments = k8s_by_kind(&objs, "Deployment");
    p.check(deployments.len() == 1, || {
        format!("k8s: {} Deployments, expected 1", deployments.len())
    });
    let Some(d) = deployments.first() else {
        p.finish("deploy/k8s");
        return;
    };
    let what = format!("k8s Deployment {}", k8s_name(d));
    p.check(
        d.pointer("/spec/replicas").and_then(Value::as_u64) == Some(3),
        || format!("{what}: replicas is not 3"),
    );
    let pod = d.pointer("/spec/template").cloned().unwrap_or_default();
    let pod_labels = pod.pointer("/metadata/labels");
    p.check(
        labels_match(d.pointer("/spec/selector/matchLabels"), pod_labels),
        || format!("{what}: selector does not match the pod labels"),
    );
    let containers = items(&pod, "/spec/containers").as_slice().to_vec();
    let Some(ct) = containers
        .iter()
        .find(|c| str_at(c, "/name") == Some("confab"))
    else {
        p.push(format!("{what}: no container named confab"));
        p.finish("deploy/k8s");
        return;
    };
    if let Some(cmd) = ct.get("command") {
        p.check(strings(Some(cmd)) == ["confab"], || {
            format!("{what}: command {cmd} is not [\"confab\"]")
        });
    }
    let args = ct
        .get("args")
        .map(|a| strings(Some(a)))
        .unwrap_or_else(docker_cmd);
    check_args(&mut p, &what, &args);

    // The environment a pod gets, resolved the way the kubelet would.
    let mut env = BTreeMap::new();
    let lookup =
        |kind_objs: &[&Value], name: &str, key: Option<&str>| -> Option<BTreeMap<String, String>> {
            let o = kind_objs.iter().find(|o| k8s_name(o) == name)?;
            let data = o.get("data").or_else(|| o.get("stringData"))?.as_object()?;
            Some(
                data.iter()
                    .filter(|(k, _)| key.is_none_or(|want| *k == want))
                    .filter_map(|(k, v)| Some((k.clone(), scalar(v)?)))
                    .collect(),
            )
        };
    for from in items(ct, "/envFrom") {
        if let Some(name) = str_at(from, "/configMapRef/name") {
            match lookup(&config_maps, name, None) {
                Some(m) => env.extend(m),
                None => p.push(format!(
                    "{what}: envFrom ConfigMap {name} is not in deploy/k8s"
                )),
            }
        }
        if let Some(name) = str_at(from, "/secretRef/name") {
            match lookup(&secrets, name, None) {
                Some(m) => env.extend(m),
                None => p.push(format!(
                    "{what}: envFrom Secret {name} is not in deploy/k8s"
                )),
            }
        }
    }
    let pod_name = "confab-7d9f8c6b5-x2x9q".to_string();
    let mut node_id_from_pod_name = false;
    for e in items(ct, "/env") {
        let Some(name) = str_at(e, "/name") else {
            continue;
        };
        p.check(
            !name.starts_with("CONFAB_") || help().envs.contains(name),
            || format!("{what}: env {name} is not a variable the binary knows"),
        );
        let value = if let Some(v) = e.get("value") {
            scalar(v)
        } else if let Some(path) = str_at(e, "/valueFrom/fieldRef/fieldPath") {
            if name == "CONFAB_NODE_ID" && path == "metadata.name" {
                node_id_from_pod_name = true;
            }
            (path == "metadata.name").then(|| pod_name.clone())
        } else if let Some(r) = e.pointer("/valueFrom/secretKeyRef") {
            let (n, k) = (
                str_at(r, "/name").unwrap_or_default(),
                str_at(r, "/key").unwrap_or_default(),
            );
            let v = lookup(&secrets, n, Some(k)).and_then(|m| m.into_values().next());
            p.check(v.is_some(), || {
                format!(
                    "{what}: {name} refers to Secret {n} key {k}, which deploy/k8s does not define"
                )
            });
            v
        } else if let Some(r) = e.pointer("/valueFrom/configMapKeyRef") {
            let (n, k) = (
                str_at(r, "/name").unwrap_or_default(),
                str_at(r, "/key").unwrap_or_default(),
            );
            let v = lookup(&config_maps, n, Some(k)).and_then(|m| m.into_values().next());
            p.check(v.is_some(), || format!("{what}: {name} refers to ConfigMap {n} key {k}, which deploy/k8s does not define"));
            v
        } else {
            None
        };
        if let Some(v) = value {
            env.insert(name.to_string(), v);
        }
    }
    p.check(node_id_from_pod_name, || {
        format!("{what}: CONFAB_NODE_ID does not come from metadata.name (downward API)")
    });
    let env: BTreeMap<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("CONFAB_"))
        .collect();
    let data_dir = match effective_config(&args, &env) {
        Ok(cfg) => {
            check_node_config(&mut p, &what, &cfg);
            p.check(cfg.node_id.as_deref() == Some(pod_name.as_str()), || {
                format!("{what}: node id {:?} is not the pod name", cfg.node_id)
            });
            Some(cfg.data_dir.to_string_lossy().to_string())
        }
        Err(e) => {
            p.push(format!("{what}: {e}"));
            None
        }
    };

    // Ports and probes.
    let ports: Vec<u64> = items(ct, "/ports")
        .filter_map(|p| p.get("containerPort").and_then(Value::as_u64))
        .collect();
    p.check(ports == [u64::from(PORT)], || {
        format!("{what}: container ports {ports:?}, expected [{PORT}]")
    });
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let got_path = str_at(ct, &format!("/{probe}/httpGet/path"));
        p.check(got_path == Some(path), || {
            format!("{what}: {probe} path {got_path:?}, expected {path}")
        });
    }
    for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
        if let Some(port) = ct.pointer(&format!("/{probe}/httpGet/port")) {
            p.check(resolve_port(ct, port) == Some(u64::from(PORT)), || {
                format!("{what}: {probe} port {port} is not {PORT}")
            });
        }
        if let Some(path) = str_at(ct, &format!("/{probe}/httpGet/path")) {
            p.check(path == "/healthz" || path == "/readyz", || {
                format!("{what}: {probe} probes {path}")
            });
        }
    }
    let annotations = pod.pointer("/metadata/annotations");
    if let Some(port) = annotations
        .and_then(|a| a.get("prometheus.io/port"))
        .and_then(scalar)
    {
        p.check(port == PORT.to_string(), || {
            format!("{what}: prometheus.io/port {port}")
        });
    }
    if let Some(path) = annotations
        .and_then(|a| a.get("prometheus.io/path"))
        .and_then(scalar)
    {
        p.check(path == "/metrics", || {
            format!("{what}: prometheus.io/path {path}")
        });
    }

    // Shutdown: endpoint removed (preStop), then SIGTERM drains in time.
    let pre_stop = strings(ct.pointer("/lifecycle/preStop/exec/command"));
    let sleep = match pre_stop.as_slice() {
        [cmd, secs] if cmd.ends_with("sleep") => secs.parse::<u64>().ok(),
        _ => ct
            .pointer("/lifecycle/preStop/sleep/seconds")
            .and_then(Value::as_u64),
    };
    p.check(sleep.is_some_and(|s| s > 0), || {
        format!("{what}: no preStop sleep ({pre_stop:?})")
    });
    let grace = pod
        .pointer("/spec/terminationGracePeriodSeconds")
        .and_then(Value::as_u64);
    let needed = sleep.unwrap_or(0) + drain_seconds();
    p.check(grace.is_some_and(|g| g > needed), || {
        format!(
            "{what}: terminationGracePeriodSeconds {grace:?} is not above preStop {}s + drain {}s (2 x shutdown_grace_s)",
            sleep.unwrap_or(0),
            drain_seconds()
        )
    });

    // Resources and security.
    for r in [
        "/resources/requests/cpu",
        "/resources/requests/memory",
        "/resources/limits/memory",
    ] {
        p.check(ct.pointer(r).is_some(), || format!("{what}: no {r}"));
    }
    let run_as_non_root = ct
        .pointer("/securityContext/runAsNonRoot")
        .or_else(|| pod.pointer("/spec/securityContext/runAsNonRoot"));
    p.check(run_as_non_root == Some(&Value::Bool(true)), || {
        format!("{what}: runAsNonRoot is not true")
    });
    p.check(
        ct.pointer("/securityContext/readOnlyRootFilesystem") == Some(&Value::Bool(true)),
        || format!("{what}: readOnlyRootFilesystem is not true"),
    );
    let uid = ct
        .pointer("/securityContext/runAsUser")
        .or_else(|| pod.pointer("/spec/securityContext/runAsUser"))
        .and_then(Value::as_u64);
    p.check(uid.is_none() || uid == docker_uid(), || {
        format!(
            "{what}: runAsUser {uid:?} is not the image's USER {:?}",
            docker_uid()
        )
    });
    if let Some(data_dir) = data_dir {
        let mounted =
            items(ct, "/volumeMounts").any(|m| str_at(m, "/mountPath") == Some(data_dir.as_str()));
        p.check(mounted, || {
            format!("{what}: the data dir {data_dir} is not a writable volume (read-only root)")
        });
    }

    // Service, PDB, HPA point at the Deployment.
    for svc in k8s_by_kind(&objs, "Service") {
        let w = format!("k8s Service {}", k8s_name(svc));
        p.check(
            labels_match(svc.pointer("/spec/selector"), pod_labels),
            || format!("{w}: selector does not match the pods"),
        );
        let sports = items(svc, "/spec/ports").as_slice().to_vec();
        p.check(!sports.is_empty(), || format!("{w}: no ports"));
        for sp in &sports {
            p.check(
                sp.get("port").and_then(Value::as_u64) == Some(u64::from(PORT)),
                || format!("{w}: port is not {PORT}"),
            );
            let target = sp
                .get("targetPort")
                .or_else(|| sp.get("port"))
                .cloned()
                .unwrap_or_default();
            p.check(resolve_port(ct, &target) == Some(u64::from(PORT)), || {
                format!("{w}: targetPort {target} does not resolve to container port {PORT}")
            });
        }
        p.check(
            str_at(svc, "/spec/sessionAffinity").unwrap_or("None") == "None",
            || format!("{w}: session affinity is not needed (any node serves any user)"),
        );
    }
    for pdb in k8s_by_kind(&objs, "PodDisruptionBudget") {
        let w = format!("k8s PodDisruptionBudget {}", k8s_name(pdb));
        p.check(
            labels_match(pdb.pointer("/spec/selector/matchLabels"), pod_labels),
            || format!("{w}: selector does not match the pods"),
        );
        let min = pdb.pointer("/spec/minAvailable").and_then(Value::as_u64);
        let max = pdb.pointer("/spec/maxUnavailable").and_then(Value::as_u64);
        p.check(min == Some(2) || max == Some(1), || {
            format!("{w}: neither minAvailable 2 nor maxUnavailable 1")
        });
    }
    for hpa in k8s_by_kind(&objs, "HorizontalPodAutoscaler") {
        let w = format!("k8s HorizontalPodAutoscaler {}", k8s_name(hpa));
        p.check(
            str_at(hpa, "/spec/scaleTargetRef/kind") == Some("Deployment")
                && str_at(hpa, "/spec/scaleTargetRef/name") == Some(k8s_name(d)),
            || format!("{w}: does not target Deployment {}", k8s_name(d)),
        );
        let min = hpa
            .pointer("/spec/minReplicas")
            .and_then(Value::as_u64)
            .unwrap_or(1);
        p.check(min >= 3, || {
            format!("{w}: minReplicas {min} is below the Deployment's 3")
        });
        let cpu = items(hpa, "/spec/metrics").any(|m| str_at(m, "/resource/name") == Some("cpu"));
        p.check(cpu, || format!("{w}: no CPU metric"));
    }
    for cm in k8s_by_kind(&objs, "ConfigMap") {
        p.check(
            items(ct, "/envFrom").any(|f| str_at(f, "/configMapRef/name") == Some(k8s_name(cm))),
            || {
                format!(
                    "k8s ConfigMap {} is not used by the Deployment",
                    k8s_name(cm)
                )
            },
        );
    }

    // kustomization.yaml, if any, lists existing files and not the example Secret.
    if deploy_files().contains_key("k8s/kustomization.yaml") {
        let k = yaml("k8s/kustomization.yaml");
        for r in strings(k.get("resources")) {
            p.check(deploy_files().contains_key(&format!("k8s/{r}")), || {
                format!("k8s/kustomization.yaml: resource {r} does not exist")
            });
            p.check(!r.contains("example"), || {
                format!("k8s/kustomization.yaml: applies the example {r}")
            });
        }
    }
    p.finish("deploy/k8s");
}

#[test]
fn the_checks_catch_mistakes() {
    // A wrong metric, label, code or grouping must be reported: otherwise
    // the tests above could pass while checking nothing.
    let cases = [
        ("rate(confab_nope_total[5m])", "not exported"),
        ("confab_commit_seconds", "only exported as"),
        (
            "confab_errors_total{code=\"no_such_code\"}",
            "not an error code",
        ),
        ("confab_connections{type=\"send\"}", "has no label"),
        ("sum by (colour) (confab_connections)", "groups by"),
        ("{__name__=\"confab_connections\"}", "without a metric name"),
        // Not only `confab_*` names are read: a typo is a metric too.
        ("sum(rate(confab_errors_totl[5m]))", "not exported"),
        ("rate(conab_errors_total[5m]) > 0", "not exported"),
        (
            "max by (instance) (confab_errors_total{code=\"nope\"} offset 5m)",
            "not an error code",
        ),
    ];
    for (expr, expected) in cases {
        let mut p = Problems::default();
        check_promql(&mut p, "case", expr);
        assert!(
            p.0.iter().any(|m| m.contains(expected)),
            "{expr:?} should be reported with {expected:?}, got {:?}",
            p.0
        );
    }
    let mut p = Problems::default();
    check_promql(
        &mut p,
        "good",
        "histogram_quantile(0.99, sum by (instance, le) (rate(confab_commit_seconds_bucket{job=\"confab\", instance=~\"$instance\"}[$__rate_interval]))) > 0.05 and on (instance) confab_errors_total{code=~\"unavailable|internal\"}",
    );
    assert!(p.0.is_empty(), "{:?}", p.0);
    // Functions, numbers, units, variables and grouping labels are not
    // metric names; the selector keeps its matchers.
    let refs = promql_refs(
        "histogram_quantile(0.5, sum by (le) (rate(confab_commit_seconds_bucket{instance=~\"$instance\"}[$__rate_interval]))) or vector(1e3)",
    )
    .expect("reads");
    assert_eq!(
        refs.selectors,
        [(
            "confab_commit_seconds_bucket".to_string(),
            vec![("instance".into(), "=~".into(), "$instance".into())]
        )]
    );
    assert_eq!(refs.grouping, ["le"]);

    let mut p = Problems::default();
    check_args(&mut p, "case", &["serve".into(), "--no-such-flag".into()]);
    assert!(
        p.0.iter().any(|m| m.contains("--no-such-flag")),
        "{:?}",
        p.0
    );
    assert!(effective_config(
        &["serve".into()],
        &BTreeMap::from([("CONFAB_LOG_JSON".into(), "1".into())])
    )
    .is_err());
    assert_eq!(
        env_names("a CONFAB_X, XCONFAB_Y $CONFAB_Z"),
        BTreeSet::from(["CONFAB_X".to_string(), "CONFAB_Z".to_string()])
    );
    assert_eq!(parse_duration("1h", 0.001), Some(3600.0));
    assert_eq!(parse_duration("1m30s", 1.0), Some(90.0));
    assert_eq!(parse_duration("500", 0.001), Some(0.5));
    assert_eq!(parse_duration("30 s", 1.0), None);
    // Every shape compose allows reads the same.
    let c: Compose = serde_json::from_value(
        serde_yaml_ng::from_str::<Value>(
            "services:\n  a:\n    command: serve --x\n    environment: [X=1]\n    depends_on: [b]\n    volumes: [data:/d, {source: ./f, target: /f}]\n    ports: [\"1:8080/tcp\", 9, {target: 7}]\n",
        )
        .expect("yaml"),
    )
    .expect("compose shapes");
    let a = &c.services["a"];
    assert_eq!(
        a.command.as_ref().map(Words::words),
        Some(vec!["serve".into(), "--x".into()])
    );
    assert_eq!(a.env(), BTreeMap::from([("X".into(), "1".into())]));
    assert_eq!(
        a.depends(),
        BTreeMap::from([("b".into(), "service_started".into())])
    );
    assert_eq!(
        a.mounts(),
        [("data".into(), "/d".into()), ("./f".into(), "/f".into())]
    );
    assert_eq!(
        a.ports.iter().map(Port::container).collect::<Vec<_>>(),
        ["8080", "9", "7"]
    );
    // Every option `confab serve --help` lists is read, not only some.
    for flag in [
        "--listen",
        "--data-dir",
        "--database",
        "--bus",
        "--print-config",
    ] {
        assert!(help().flags.contains(flag), "{flag}: {:?}", help().flags);
    }
}

/// The value of `--name=value` among coturn's arguments.
fn coturn_opt<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .find_map(|a| a.strip_prefix(name)?.strip_prefix('='))
}

/// Checks coturn's arguments: shared-secret auth, and the port every TURN
/// URL the nodes hand out names.
fn check_coturn(p: &mut Problems, what: &str, args: &[String], turn_urls: &[String]) {
    p.check(args.iter().any(|a| a == "--use-auth-secret"), || {
        format!("{what}: coturn does not run with --use-auth-secret (Confab's credentials need it)")
    });
    let port = coturn_opt(args, "--listening-port").unwrap_or("3478");
    p.check(!turn_urls.is_empty(), || {
        format!("{what}: the nodes hand out no TURN URL")
    });
    for url in turn_urls {
        let host_port = url.split('?').next().unwrap_or(url);
        p.check(host_port.rsplit(':').next() == Some(port), || {
            format!("{what}: TURN URL {url} is not coturn's port {port}")
        });
    }
}

#[test]
fn coturn_shares_the_secret_and_port_with_the_nodes() {
    let mut p = Problems::default();
    // Compose: coturn's static-auth-secret is the nodes' CONFAB_TURN_SECRET.
    let c = compose();
    match service_with_image(&c, "coturn/coturn") {
        None => p.push("compose: no coturn/coturn service".into()),
        Some((name, s)) => {
            let what = format!("compose service {name}");
            let args = s.command.as_ref().map(Words::words).unwrap_or_default();
            let secret = coturn_opt(&args, "--static-auth-secret").map(str::to_string);
            for (node, ns) in confab_services(&c) {
                let env = ns.env();
                p.check(env.get("CONFAB_TURN_SECRET") == secret.as_ref(), || {
                    format!("compose service {node}: CONFAB_TURN_SECRET is not {what}'s static-auth-secret")
                });
                let args = ns.command.as_ref().map_or_else(docker_cmd, Words::words);
                match effective_config(&args, &env) {
                    Ok(cfg) => check_coturn(&mut p, &what, &args_of(s), &cfg.calls.turn_urls),
                    Err(e) => p.push(format!("compose service {node}: {e}")),
                }
            }
            let (lo, hi) = (
                coturn_opt(&args, "--min-port").unwrap_or("49152"),
                coturn_opt(&args, "--max-port").unwrap_or("65535"),
            );
            let published: Vec<String> = s
                .ports
                .iter()
                .filter_map(|port| match port {
                    Port::Short(v) => scalar(v),
                    Port::Long { target } => scalar(target),
                })
                .collect();
            p.check(
                published.iter().any(|x| x.contains(&format!("{lo}-{hi}"))),
                || format!("{what}: the relay range {lo}-{hi} is not published ({published:?})"),
            );
        }
    }
    // Kubernetes: the DaemonSet reads the same Secret key as the pods.
    let objs = k8s_objects();
    let daemons = k8s_by_kind(&objs, "DaemonSet");
    let coturn = daemons.iter().find(|d| k8s_name(d) == "coturn");
    let secret_ref = |container: &Value, var: &str| -> Option<(String, String)> {
        items(container, "/env")
            .find(|e| str_at(e, "/name") == Some(var))
            .and_then(|e| e.pointer("/valueFrom/secretKeyRef"))
            .map(|r| {
                (
                    str_at(r, "/name").unwrap_or_default().to_string(),
                    str_at(r, "/key").unwrap_or_default().to_string(),
                )
            })
    };
    let confab_ct = k8s_by_kind(&objs, "Deployment").first().and_then(|d| {
        items(d, "/spec/template/spec/containers")
            .find(|c| str_at(c, "/name") == Some("confab"))
            .cloned()
    });
    match (coturn, confab_ct) {
        (Some(d), Some(confab)) => {
            let what = "k8s DaemonSet coturn";
            let ct = items(d, "/spec/template/spec/containers")
                .next()
                .cloned()
                .unwrap_or_default();
            let args = strings(ct.get("args"));
            let var = coturn_opt(&args, "--static-auth-secret")
                .and_then(|v| v.strip_prefix("$(")?.strip_suffix(')'))
                .unwrap_or_default()
                .to_string();
            let theirs = secret_ref(&ct, &var);
            p.check(
                theirs.is_some() && theirs == secret_ref(&confab, "CONFAB_TURN_SECRET"),
                || format!("{what}: its static-auth-secret is not the Secret key the confab pods read as CONFAB_TURN_SECRET"),
            );
            let urls: Vec<String> = k8s_by_kind(&objs, "ConfigMap")
                .iter()
                .filter_map(|cm| str_at(cm, "/data/CONFAB_TURN_URLS"))
                .flat_map(|v| v.split(',').map(str::to_string).collect::<Vec<_>>())
                .collect();
            check_coturn(&mut p, what, &args, &urls);
        }
        _ => p.push("k8s: no coturn DaemonSet next to the confab Deployment".into()),
    }
    p.finish("coturn");
}

fn args_of(s: &Service) -> Vec<String> {
    s.command.as_ref().map(Words::words).unwrap_or_default()
}
