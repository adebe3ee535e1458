//! `[sinks.NAME]`: where reports go. One flat table per sink; `kind` says which keys apply, and a
//! key of another kind is an error (an `exchange` on an HTTP sink is a mistake, not a no-op).

use super::SmtpConfig;
use super::secrets::SecretRef;
use super::units;
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// One JSON file per event in a folder (the embedded default).
    Spool,
    /// RabbitMQ (AMQP 0-9-1) with publisher confirms.
    Amqp,
    /// POST to a URL, signed.
    Http,
    /// A readable mail per event, with its photos, to a unit's address (agencies without a system).
    Email,
}

impl SinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Spool => "spool",
            SinkKind::Amqp => "amqp",
            SinkKind::Http => "http",
            SinkKind::Email => "email",
        }
    }
}

/// How much of the reporter a sink may receive.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ContactPolicy {
    #[default]
    Full,
    Masked,
    None,
}

pub const EVENT_TYPES: &[&str] = &["report.created", "report.updated", "report.duplicate"];
pub const ROUTING_PLACEHOLDERS: &[&str] = &[
    "{event}",
    "{category}",
    "{unit}",
    "{channel}",
    "{kind}",
    "{ward}",
];

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    pub kind: SinkKind,
    #[serde(default)]
    pub contact: ContactPolicy,
    /// Only these event types (default: all).
    #[serde(default)]
    pub events: Vec<String>,
    /// Only reports of these category codes (default: all).
    #[serde(default)]
    pub categories: Vec<String>,
    /// Only reports routed to these units (default: all).
    #[serde(default)]
    pub units: Vec<String>,
    /// Events per second at most (default: no limit).
    pub rate_per_second: Option<u32>,

    /// spool: the folder events are written to (relative to the state directory).
    pub dir: Option<PathBuf>,

    /// amqp: `amqp://host:port/vhost` without a password, or http: the receiver's URL.
    pub url: Option<String>,
    /// amqp: a file holding the URL with its credentials.
    pub url_file: Option<PathBuf>,
    /// amqp: an environment variable holding the URL with its credentials.
    pub url_env: Option<String>,
    /// amqp: the exchange published to ("" is the default exchange).
    pub exchange: Option<String>,
    /// amqp: routing key template.
    pub routing_key: Option<String>,
    /// amqp: declare the exchange (topic, durable) and, with `queue`, the queue and its binding.
    pub declare: Option<bool>,
    /// amqp: a durable queue declared and bound to the exchange.
    pub queue: Option<String>,
    /// amqp: the binding key for `queue`.
    pub binding_key: Option<String>,
    /// amqp: the queue's dead-letter exchange (declared fanout, with `QUEUE.dead` bound to it).
    pub dead_letter_exchange: Option<String>,
    /// amqp: published but unconfirmed messages at most; http: requests in flight at most.
    pub window: Option<usize>,

    /// http: the HMAC-SHA256 key, in a file.
    pub secret_file: Option<PathBuf>,
    /// http: the HMAC-SHA256 key, in an environment variable.
    pub secret_env: Option<String>,
    /// http: the header carrying `sha256=<hex>` of the body.
    pub signature_header: Option<String>,
    /// http: one request's limit, connection included.
    #[serde(default, deserialize_with = "units::opt_duration")]
    pub timeout: Option<Duration>,
    /// amqps and https: PEM certificates of a private CA to trust beside the public roots.
    pub ca_file: Option<PathBuf>,
    /// http: allow `http://` to a host that is not loopback (personal data in clear text).
    pub allow_plain_http: Option<bool>,

    /// email: the sender, e.g. `"Trung tâm IOC <phananh@hue.example.vn>"`.
    pub from: Option<String>,
    /// email: where every event goes (unless `unit_addresses` names the report's unit).
    pub to: Option<String>,
    /// email: the address of each unit (agency), by unit code.
    #[serde(default)]
    pub unit_addresses: BTreeMap<String, String>,
    /// email: photos attached to one mail at most, in total; the rest are listed, not attached.
    #[serde(default, deserialize_with = "opt_size")]
    pub max_attachments_size: Option<u64>,
    /// email: the relay.
    pub smtp: Option<SmtpConfig>,
    /// Where media live (set from `state_dir` when loading).
    #[serde(skip)]
    pub media_dir: PathBuf,
}

fn opt_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    units::size(d).map(Some)
}

/// The AMQP settings with their defaults, once validated.
#[derive(Debug, Clone, PartialEq)]
pub struct AmqpSettings {
    pub url: AmqpUrl,
    pub exchange: String,
    pub routing_key: String,
    pub declare: bool,
    pub queue: Option<String>,
    pub binding_key: String,
    pub dead_letter_exchange: Option<String>,
    pub window: usize,
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AmqpUrl {
    Inline(String),
    Secret(SecretRef),
}

impl AmqpUrl {
    pub fn resolve(&self) -> Result<String, String> {
        match self {
            AmqpUrl::Inline(u) => Ok(u.clone()),
            AmqpUrl::Secret(s) => s.resolve(),
        }
    }
}

/// The HTTP settings with their defaults, once validated.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    pub url: String,
    pub secret: Option<SecretRef>,
    pub signature_header: String,
    pub timeout: Duration,
    pub ca_file: Option<PathBuf>,
    pub window: usize,
}

/// The email sink's settings, once validated.
#[derive(Debug, Clone, PartialEq)]
pub struct EmailSinkSettings {
    pub from: String,
    pub to: Option<String>,
    pub unit_addresses: BTreeMap<String, String>,
    pub max_attachments_size: u64,
    pub smtp: SmtpConfig,
    pub media_dir: PathBuf,
    pub contact: ContactPolicy,
}

/// 7 MB of photos is under 10 MB once base64-encoded: Postfix's default message size limit.
pub const DEFAULT_MAX_ATTACHMENTS_SIZE: u64 = 7_000_000;
pub const DEFAULT_EXCHANGE: &str = "phananh.reports";
pub const DEFAULT_ROUTING_KEY: &str = "report.{category}.{unit}";
pub const DEFAULT_SIGNATURE_HEADER: &str = "X-Phananh-Signature";
pub const DEFAULT_AMQP_WINDOW: usize = 256;
pub const DEFAULT_HTTP_WINDOW: usize = 8;
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(10);

impl SinkConfig {
    pub fn spool(dir: PathBuf) -> Self {
        Self {
            kind: SinkKind::Spool,
            contact: ContactPolicy::Full,
            events: Vec::new(),
            categories: Vec::new(),
            units: Vec::new(),
            rate_per_second: None,
            dir: Some(dir),
            url: None,
            url_file: None,
            url_env: None,
            exchange: None,
            routing_key: None,
            declare: None,
            queue: None,
            binding_key: None,
            dead_letter_exchange: None,
            window: None,
            secret_file: None,
            secret_env: None,
            signature_header: None,
            timeout: None,
            ca_file: None,
            allow_plain_http: None,
            from: None,
            to: None,
            unit_addresses: BTreeMap::new(),
            max_attachments_size: None,
            smtp: None,
            media_dir: PathBuf::new(),
        }
    }

    /// Only valid after `validate` accepted an email sink.
    pub fn email(&self) -> EmailSinkSettings {
        EmailSinkSettings {
            from: self.from.clone().unwrap_or_default(),
            to: self.to.clone(),
            unit_addresses: self.unit_addresses.clone(),
            max_attachments_size: self
                .max_attachments_size
                .unwrap_or(DEFAULT_MAX_ATTACHMENTS_SIZE),
            smtp: self
                .smtp
                .clone()
                .expect("validated: email sinks have [smtp]"),
            media_dir: self.media_dir.clone(),
            contact: self.contact,
        }
    }

    /// The units this sink takes: `units`, or for an email sink without a catch-all `to`, the
    /// units it has an address for (a report for any other unit has nowhere to go).
    pub fn routed_units(&self) -> Vec<String> {
        if self.kind == SinkKind::Email && self.to.is_none() && self.units.is_empty() {
            return self.unit_addresses.keys().cloned().collect();
        }
        self.units.clone()
    }

    /// Only valid after `validate` accepted an amqp sink.
    pub fn amqp(&self) -> AmqpSettings {
        let url = match (&self.url, &self.url_file, &self.url_env) {
            (_, Some(f), _) => AmqpUrl::Secret(SecretRef::File(f.clone())),
            (_, _, Some(v)) => AmqpUrl::Secret(SecretRef::Env(v.clone())),
            (Some(u), ..) => AmqpUrl::Inline(u.clone()),
            _ => AmqpUrl::Inline("amqp://127.0.0.1:5672/%2f".into()),
        };
        AmqpSettings {
            url,
            exchange: self
                .exchange
                .clone()
                .unwrap_or_else(|| DEFAULT_EXCHANGE.into()),
            routing_key: self
                .routing_key
                .clone()
                .unwrap_or_else(|| DEFAULT_ROUTING_KEY.into()),
            declare: self.declare.unwrap_or(false),
            queue: self.queue.clone(),
            binding_key: self.binding_key.clone().unwrap_or_else(|| "#".into()),
            dead_letter_exchange: self.dead_letter_exchange.clone(),
            window: self.window.unwrap_or(DEFAULT_AMQP_WINDOW),
            ca_file: self.ca_file.clone(),
        }
    }

    /// Only valid after `validate` accepted an http sink.
    pub fn http(&self) -> HttpSettings {
        HttpSettings {
            url: self.url.clone().unwrap_or_default(),
            secret: match (&self.secret_file, &self.secret_env) {
                (Some(f), _) => Some(SecretRef::File(f.clone())),
                (_, Some(v)) => Some(SecretRef::Env(v.clone())),
                _ => None,
            },
            signature_header: self
                .signature_header
                .clone()
                .unwrap_or_else(|| DEFAULT_SIGNATURE_HEADER.into()),
            timeout: self.timeout.unwrap_or(DEFAULT_HTTP_TIMEOUT),
            ca_file: self.ca_file.clone(),
            window: self.window.unwrap_or(DEFAULT_HTTP_WINDOW),
        }
    }

    /// The keys set on this sink that belong to another kind, for a clear error.
    fn foreign_keys(&self) -> Vec<&'static str> {
        let amqp = [
            ("url_file", self.url_file.is_some()),
            ("url_env", self.url_env.is_some()),
            ("exchange", self.exchange.is_some()),
            ("routing_key", self.routing_key.is_some()),
            ("declare", self.declare.is_some()),
            ("queue", self.queue.is_some()),
            ("binding_key", self.binding_key.is_some()),
            ("dead_letter_exchange", self.dead_letter_exchange.is_some()),
        ];
        let http = [
            ("secret_file", self.secret_file.is_some()),
            ("secret_env", self.secret_env.is_some()),
            ("signature_header", self.signature_header.is_some()),
            ("timeout", self.timeout.is_some()),
            ("allow_plain_http", self.allow_plain_http.is_some()),
        ];
        let spool = [("dir", self.dir.is_some())];
        let email = [
            ("from", self.from.is_some()),
            ("to", self.to.is_some()),
            ("unit_addresses", !self.unit_addresses.is_empty()),
            ("max_attachments_size", self.max_attachments_size.is_some()),
            ("smtp", self.smtp.is_some()),
        ];
        let shared = [
            ("ca_file", self.ca_file.is_some()),
            ("url", self.url.is_some()),
            ("window", self.window.is_some()),
        ];
        let mut out = Vec::new();
        let mut add = |set: &[(&'static str, bool)]| {
            out.extend(set.iter().filter(|(_, on)| *on).map(|(k, _)| *k));
        };
        match self.kind {
            SinkKind::Spool => {
                add(&amqp);
                add(&http);
                add(&shared);
                add(&email);
            }
            SinkKind::Amqp => {
                add(&http);
                add(&spool);
                add(&email);
            }
            SinkKind::Http => {
                add(&amqp);
                add(&spool);
                add(&email);
            }
            SinkKind::Email => {
                add(&amqp);
                add(&http);
                add(&spool);
                add(&shared);
            }
        }
        out
    }
}

/// What a sink is checked against.
pub(super) struct Known<'a> {
    /// The config file's folder (secret and CA files are relative to it).
    pub base: &'a Path,
    /// Spool folders are relative to it.
    pub state_dir: &'a Path,
    /// Category codes (empty: no categories configured, nothing to check against).
    pub categories: &'a HashSet<&'a str>,
    /// Units the categories and routes can give a report.
    pub units: &'a HashSet<&'a str>,
}

/// Checks one sink and makes its paths absolute. Every problem goes to `error(key, message)`.
pub(super) fn validate(
    name: &str,
    sink: &mut SinkConfig,
    known: &Known<'_>,
    error: &mut dyn FnMut(&str, String),
) {
    let (base, state_dir, categories) = (known.base, known.state_dir, known.categories);
    let kind = sink.kind.as_str();
    for key in sink.foreign_keys() {
        error(
            key,
            format!("sink {name:?}: `{key}` does not apply to a sink of kind \"{kind}\""),
        );
    }
    for e in &sink.events {
        if !EVENT_TYPES.contains(&e.as_str()) {
            error(
                "events",
                format!(
                    "sink {name:?}: unknown event type {e:?}; use {}",
                    EVENT_TYPES.join(", ")
                ),
            );
        }
    }
    for c in &sink.categories {
        if !categories.is_empty() && !categories.contains(c.as_str()) {
            error(
                "categories",
                format!("sink {name:?}: category {c:?} is not one of the [[categories]] codes"),
            );
        }
    }
    let named_units = sink.units.iter().chain(sink.unit_addresses.keys());
    for u in named_units {
        if !categories.is_empty() && !known.units.contains(u.as_str()) {
            error(
                "units",
                format!(
                    "sink {name:?}: unit {u:?} is not the unit of any [[categories]] or [[routes]], so no report goes there"
                ),
            );
        }
    }
    if sink.rate_per_second == Some(0) {
        error(
            "rate_per_second",
            format!(
                "sink {name:?}: rate_per_second must be at least 1 (leave it out for no limit)"
            ),
        );
    }
    if sink.window == Some(0) {
        error(
            "window",
            format!("sink {name:?}: window must be at least 1"),
        );
    }
    if let Some(f) = sink.ca_file.take() {
        let f = super::resolve(base, &f);
        if let Err(e) = crate::fetch::tls_config_with(Some(&f)) {
            error("ca_file", format!("sink {name:?}: {e}"));
        }
        sink.ca_file = Some(f);
    }
    match sink.kind {
        SinkKind::Spool => match &sink.dir {
            Some(dir) => sink.dir = Some(super::resolve(state_dir, dir)),
            None => error(
                "kind",
                format!(
                    "sink {name:?} of kind \"spool\" needs `dir = \"spool\"` (relative to state_dir)"
                ),
            ),
        },
        SinkKind::Amqp => validate_amqp(name, sink, base, error),
        SinkKind::Http => validate_http(name, sink, base, error),
        SinkKind::Email => validate_email(name, sink, base, error),
    }
    sink.media_dir = state_dir.join("media");
}

fn validate_email(
    name: &str,
    sink: &mut SinkConfig,
    base: &Path,
    error: &mut dyn FnMut(&str, String),
) {
    let mailbox = |key: &str, v: &str, error: &mut dyn FnMut(&str, String)| {
        if v.parse::<lettre::message::Mailbox>().is_err() {
            error(
                key,
                format!(
                    "sink {name:?}: {v:?} is not a mail address (write \"name <user@host>\" or \"user@host\")"
                ),
            );
        }
    };
    match &sink.from {
        Some(f) => mailbox("from", f, error),
        None => error(
            "kind",
            format!("sink {name:?} of kind \"email\" needs `from = \"Trung tâm IOC <phananh@…>\"`"),
        ),
    }
    if let Some(t) = &sink.to {
        mailbox("to", t, error);
    }
    for (unit, a) in &sink.unit_addresses {
        mailbox("unit_addresses", a, error);
        if !sink.units.is_empty() && !sink.units.contains(unit) {
            error(
                "unit_addresses",
                format!(
                    "sink {name:?}: unit {unit:?} has an address but is not in `units`, so it never gets mail"
                ),
            );
        }
    }
    if sink.to.is_none() {
        for unit in sink
            .units
            .iter()
            .filter(|u| !sink.unit_addresses.contains_key(*u))
        {
            error(
                "units",
                format!(
                    "sink {name:?}: unit {unit:?} is in `units` but has no address in unit_addresses, and there is no `to`"
                ),
            );
        }
    }
    if sink.to.is_none() && sink.unit_addresses.is_empty() {
        error(
            "kind",
            format!(
                "sink {name:?} of kind \"email\" needs `to = \"…\"` or `unit_addresses = {{ so_xay_dung = \"…\" }}`"
            ),
        );
    }
    match sink.smtp.as_mut() {
        None => error(
            "kind",
            format!(
                "sink {name:?} of kind \"email\" needs a [sinks.{name}.smtp] table (host, tls, username, password_file)"
            ),
        ),
        Some(smtp) => {
            for (key, msg) in smtp.problems() {
                error(key, format!("sink {name:?}: smtp: {msg}"));
            }
            smtp.ca_file = smtp.ca_file.take().map(|p| super::resolve(base, &p));
            smtp.password_file = smtp.password_file.take().map(|p| super::resolve(base, &p));
        }
    }
}

fn validate_amqp(
    name: &str,
    sink: &mut SinkConfig,
    base: &Path,
    error: &mut dyn FnMut(&str, String),
) {
    let refs = [
        sink.url.is_some(),
        sink.url_file.is_some(),
        sink.url_env.is_some(),
    ];
    match refs.iter().filter(|x| **x).count() {
        0 => error(
            "kind",
            format!(
                "sink {name:?} of kind \"amqp\" needs the broker's URL: `url_file = \"secrets/amqp-url\"` (a file holding amqp://user:password@host:5672/vhost), `url_env = \"VAR\"`, or `url = \"amqp://host:5672/%2f\"` when it has no password"
            ),
        ),
        1 => {}
        _ => error(
            "url",
            format!("sink {name:?}: give one of url, url_file and url_env"),
        ),
    }
    if let Some(u) = &sink.url {
        match url::Url::parse(u) {
            Ok(parsed) if !matches!(parsed.scheme(), "amqp" | "amqps") => error(
                "url",
                format!("sink {name:?}: url must start with amqp:// or amqps://"),
            ),
            Ok(parsed) if parsed.password().is_some() => error(
                "url",
                format!(
                    "sink {name:?}: the url holds a password inline; put the whole URL in a file only phananh can read and write `url_file = \"/etc/phananh/secrets/amqp-url\"` (or `url_env`)"
                ),
            ),
            Ok(_) => {}
            Err(e) => error("url", format!("sink {name:?}: url is not a URL: {e}")),
        }
    }
    if let Some(f) = sink.url_file.take() {
        sink.url_file = Some(super::resolve(base, &f));
    }
    if let Some(t) = &sink.routing_key {
        check_template(name, t, error);
    }
    if sink.dead_letter_exchange.is_some() && sink.queue.is_none() {
        error(
            "dead_letter_exchange",
            format!(
                "sink {name:?}: dead_letter_exchange belongs to a declared queue; set `queue` too"
            ),
        );
    }
    if (sink.queue.is_some() || sink.binding_key.is_some()) && sink.declare != Some(true) {
        error(
            "queue",
            format!(
                "sink {name:?}: `queue`, `binding_key` and `dead_letter_exchange` are declared by phananh only with `declare = true`"
            ),
        );
    }
    if sink.declare == Some(true) && sink.exchange.as_deref() == Some("") {
        error(
            "declare",
            format!(
                "sink {name:?}: the default exchange (\"\") cannot be declared; name an exchange"
            ),
        );
    }
}

/// Placeholders in a routing key template must be known ones, so a typo fails at `check`.
fn check_template(name: &str, template: &str, error: &mut dyn FnMut(&str, String)) {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            error(
                "routing_key",
                format!("sink {name:?}: routing_key has a '{{' without its '}}'"),
            );
            return;
        };
        let p = &rest[open..open + close + 1];
        if !ROUTING_PLACEHOLDERS.contains(&p) {
            error(
                "routing_key",
                format!(
                    "sink {name:?}: routing_key placeholder {p} is unknown; use {}",
                    ROUTING_PLACEHOLDERS.join(", ")
                ),
            );
        }
        rest = &rest[open + close + 1..];
    }
    if template.len() > 255 {
        error(
            "routing_key",
            format!("sink {name:?}: routing_key is longer than AMQP's 255 bytes"),
        );
    }
}

fn validate_http(
    name: &str,
    sink: &mut SinkConfig,
    base: &Path,
    error: &mut dyn FnMut(&str, String),
) {
    match sink.url.as_deref().map(url::Url::parse) {
        None => error(
            "kind",
            format!("sink {name:?} of kind \"http\" needs `url = \"https://...\"`"),
        ),
        Some(Err(e)) => error("url", format!("sink {name:?}: url is not a URL: {e}")),
        Some(Ok(u)) => {
            let loopback = match u.host() {
                Some(url::Host::Ipv4(a)) => a.is_loopback(),
                Some(url::Host::Ipv6(a)) => a.is_loopback(),
                Some(url::Host::Domain(d)) => d == "localhost",
                None => false,
            };
            match u.scheme() {
                "https" => {}
                "http" if loopback || sink.allow_plain_http == Some(true) => {}
                "http" => error(
                    "url",
                    format!(
                        "sink {name:?}: http:// to a host other than loopback sends reports (and personal data) in clear text; use https://, or set `allow_plain_http = true` on a network you trust"
                    ),
                ),
                other => error(
                    "url",
                    format!("sink {name:?}: url scheme {other:?} is not http or https"),
                ),
            }
            if !u.username().is_empty() || u.password().is_some() {
                error(
                    "url",
                    format!(
                        "sink {name:?}: the url holds credentials inline; sign requests with `secret_file` instead"
                    ),
                );
            }
        }
    }
    if sink.secret_file.is_some() && sink.secret_env.is_some() {
        error(
            "secret_file",
            format!("sink {name:?}: give one of secret_file and secret_env"),
        );
    }
    if let Some(f) = sink.secret_file.take() {
        sink.secret_file = Some(super::resolve(base, &f));
    }
    if let Some(h) = &sink.signature_header
        && reqwest::header::HeaderName::from_bytes(h.as_bytes()).is_err()
    {
        error(
            "signature_header",
            format!("sink {name:?}: {h:?} is not a valid header name"),
        );
    }
    if sink.timeout.is_some_and(|t| t.is_zero()) {
        error(
            "timeout",
            format!("sink {name:?}: timeout must be more than 0s"),
        );
    }
}
