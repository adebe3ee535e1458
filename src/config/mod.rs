//! Loading and validating `phananh.toml` and `channels/*.toml`.
//!
//! Every problem in every file is collected before giving up, each with file:line:column, so
//! `phananh check` shows an operator the whole list at once. The daemon loads through the same path,
//! so what `check` accepts is exactly what `run` starts with.

mod ack;
mod channel;
mod daemon;
mod error;
mod facebook;
mod feed;
pub mod secrets;
mod sink;
pub mod units;

pub use ack::{AckConfig, SmtpConfig};
pub use channel::{
    AfterIngest, Backlog, ChannelConfig, ChannelKind, ChannelSettings, Credential, ImapAfter,
    ImapConfig, MaildirConfig, TlsMode,
};
pub use daemon::{
    CategoriesFile, CategoryConfig, DaemonConfig, DedupeConfig, EmailConfig, ForwardConfig,
    PlaceConfig, RouteConfig, StoreConfig,
};
pub use error::{ConfigError, ConfigErrors};
pub use facebook::{FacebookConfig, FeedMode};
pub use feed::{FeedConfig, FeedFormat, JsonMapping};
pub use sink::{
    AmqpSettings, AmqpUrl, ContactPolicy, EVENT_TYPES, EmailSinkSettings, HttpSettings, SinkConfig,
    SinkKind,
};

use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// Where the daemon file is looked for when neither `--config` nor `PHANANH_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/phananh/phananh.toml";

/// Everything the daemon runs with, validated, with paths made absolute.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub daemon: DaemonConfig,
    pub tz: chrono_tz::Tz,
    pub channels: BTreeMap<String, ChannelConfig>,
}

impl Config {
    pub fn database_path(&self) -> PathBuf {
        self.daemon.state_dir.join("phananh.db")
    }

    pub fn media_dir(&self) -> PathBuf {
        self.daemon.state_dir.join("media")
    }

    /// The email limits for one channel: the daemon's defaults (with every own address) and the
    /// channel's overrides.
    pub fn email_limits(&self, channel: &ChannelConfig) -> EmailConfig {
        let defaults = self.email_defaults();
        match &channel.settings {
            ChannelSettings::Maildir(m) => m.limits(&defaults),
            ChannelSettings::Imap(m) => m.limits(&defaults),
            ChannelSettings::Facebook(_) | ChannelSettings::Feed(_) => defaults,
        }
    }

    /// `[email]` as every mail channel starts from: `own_addresses` also holds each channel's
    /// acknowledgement sender, so what we send is recognised as ours when it comes back.
    pub fn email_defaults(&self) -> EmailConfig {
        let mut email = self.daemon.email.clone();
        for a in self
            .channels
            .values()
            .filter_map(|c| c.ack()?.from_address())
        {
            if !email.own_addresses.contains(&a) {
                email.own_addresses.push(a);
            }
        }
        email
    }

    pub fn category(&self, code: &str) -> Option<&CategoryConfig> {
        self.daemon.categories.iter().find(|c| c.code == code)
    }
}

/// The outcome for one file, for `check`'s ✓/✗ lines.
#[derive(Debug, Clone)]
pub struct FileStatus {
    pub path: PathBuf,
    pub errors: Vec<ConfigError>,
}

/// What a full load found: one status per file, and the config when there were no errors.
#[derive(Debug)]
pub struct LoadReport {
    pub files: Vec<FileStatus>,
    pub config: Option<Config>,
}

impl LoadReport {
    pub fn errors(&self) -> ConfigErrors {
        ConfigErrors(self.files.iter().flat_map(|f| f.errors.clone()).collect())
    }
}

/// Loads and validates everything; the error lists every problem found.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let report = check(path);
    let errors = report.errors();
    match report.config {
        Some(c) if errors.0.is_empty() => Ok(c),
        _ => Err(errors),
    }
}

/// Loads everything and reports per file; never stops at the first problem.
pub fn check(path: &Path) -> LoadReport {
    let path = absolute(path);
    let mut files = Vec::new();
    let base = path.parent().unwrap_or(Path::new("/")).to_path_buf();

    let daemon = load_daemon(&path, &base);
    let (daemon, tz, daemon_errors) = match daemon {
        Ok((d, tz)) => (Some(d), Some(tz), Vec::new()),
        Err(e) => (None, None, e),
    };
    files.push(FileStatus {
        path: path.clone(),
        errors: daemon_errors,
    });

    // Without a valid daemon file we still check channels in the default place, so an operator
    // sees channel mistakes in the same run.
    let channels_dir = daemon
        .as_ref()
        .map(|d| d.channels_dir.clone())
        .unwrap_or_else(|| base.join("channels"));
    let mut channels = BTreeMap::new();
    match list_channel_files(&channels_dir) {
        Ok(paths) => {
            for p in paths {
                let status = match load_channel(&p) {
                    Ok(c) => {
                        channels.insert(c.name.clone(), c);
                        Vec::new()
                    }
                    Err(e) => e,
                };
                files.push(FileStatus {
                    path: p,
                    errors: status,
                });
            }
        }
        Err(msg) => files.push(FileStatus {
            path: channels_dir.clone(),
            errors: vec![ConfigError::new(&channels_dir, None, msg)],
        }),
    }

    let ok = files.iter().all(|f| f.errors.is_empty());
    let config = match (ok, daemon, tz) {
        (true, Some(daemon), Some(tz)) => Some(Config {
            daemon,
            path,
            tz,
            channels,
        }),
        _ => None,
    };
    LoadReport { files, config }
}

fn absolute(path: &Path) -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_default();
    resolve(&cwd, path)
}

/// Joins a relative path onto the file's folder and removes `.`/`..` lexically, so messages show
/// `/etc/phananh/channels/mail.toml`, not `/etc/phananh/config/../channels/mail.toml`.
fn resolve(base: &Path, p: &Path) -> PathBuf {
    use std::path::Component;
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Reads and parses a file, refusing inline secrets, then deserialises into `T`.
fn parse_file<T: DeserializeOwned>(
    path: &Path,
) -> Result<(String, toml::Table, T), Vec<ConfigError>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![ConfigError::new(path, None, format!("cannot read: {e}"))])?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| vec![ConfigError::from_toml(path, &text, &e)])?;
    let mut errors = secrets::refuse_inline(path, &text, &table);
    match toml::from_str::<T>(&text) {
        Ok(v) if errors.is_empty() => Ok((text, table, v)),
        Ok(_) => Err(errors),
        Err(e) => {
            // An inline secret is also an unknown key; say the more useful thing once.
            let dup = errors
                .iter()
                .any(|s| e.message().contains(&format!("`{}`", secret_key_of(s))));
            if !dup {
                errors.push(ConfigError::from_toml(path, &text, &e));
            }
            errors.sort_by_key(|e| e.position);
            Err(errors)
        }
    }
}

fn secret_key_of(e: &ConfigError) -> String {
    e.message.split('`').nth(1).unwrap_or_default().to_string()
}

/// Reads the geography files named in `[place]` (relative to the config file); what cannot be
/// read is a config error, so `phananh check` says so before the daemon starts.
fn load_place(p: &mut PlaceConfig, base: &Path, error: &mut dyn FnMut(&str, String)) {
    use crate::pipeline::geo::{Area, Wards};
    let read = |key: &str, path: &Path| {
        std::fs::read_to_string(path).map_err(|e| {
            (
                key.to_string(),
                format!("cannot read {}: {e}", path.display()),
            )
        })
    };
    let mut report = |r: Result<(), (String, String)>| {
        if let Err((key, msg)) = r {
            error(&key, msg);
        }
    };
    if let Some(f) = p.boundary_file.take().map(|f| resolve(base, &f)) {
        report(read("boundary_file", &f).and_then(|t| {
            Area::from_geojson(&t)
                .map(|a| p.boundary = a)
                .map_err(|e| ("boundary_file".into(), format!("{}: {e}", f.display())))
        }));
        p.boundary_file = Some(f);
    }
    if let Some(f) = p.wards_file.take().map(|f| resolve(base, &f)) {
        report(read("wards_file", &f).and_then(|t| {
            Wards::from_toml(&t)
                .map(|w| p.wards = w)
                .map_err(|e| ("wards_file".into(), format!("{}: {e}", f.display())))
        }));
        p.wards_file = Some(f);
    }
    if let Some(f) = p.ward_polygons_file.take().map(|f| resolve(base, &f)) {
        if p.wards.is_empty() {
            report(Err((
                "ward_polygons_file".into(),
                "ward_polygons_file needs wards_file: its codes name wards there".into(),
            )));
        } else {
            let wards = std::mem::take(&mut p.wards);
            report(read("ward_polygons_file", &f).and_then(|t| {
                wards
                    .with_polygons(&t)
                    .map(|w| p.wards = w)
                    .map_err(|e| ("ward_polygons_file".into(), format!("{}: {e}", f.display())))
            }));
        }
        p.ward_polygons_file = Some(f);
    }
}

fn load_daemon(
    path: &Path,
    base: &Path,
) -> Result<(DaemonConfig, chrono_tz::Tz), Vec<ConfigError>> {
    let (text, _table, mut d) = parse_file::<DaemonConfig>(path)?;
    let mut errors = Vec::new();
    let err = |key: &str, msg: String| ConfigError::at_key(path, &text, key, msg);

    d.state_dir = resolve(base, &d.state_dir);
    d.channels_dir = resolve(base, &d.channels_dir);
    if let Some(file) = d.categories_file.take().map(|f| resolve(base, &f)) {
        if !d.categories.is_empty() {
            errors.push(err(
                "categories_file",
                "categories come from categories_file or from [[categories]] here, not both".into(),
            ));
        }
        if !d.routes.is_empty() {
            errors.push(err(
                "routes",
                "with categories_file, [[routes]] go in that file".into(),
            ));
        }
        match parse_file::<CategoriesFile>(&file) {
            Ok((_, _, c)) => {
                d.categories = c.categories;
                d.routes = c.routes;
            }
            Err(e) => errors.extend(e),
        }
        d.categories_file = Some(file);
    }
    load_place(&mut d.place, base, &mut |key, msg| {
        errors.push(err(key, msg))
    });
    let tz = match d.time_zone.parse::<chrono_tz::Tz>() {
        Ok(tz) => Some(tz),
        Err(_) => {
            errors.push(err(
                "time_zone",
                format!(
                    "unknown time zone {:?}; use an IANA name such as \"Asia/Ho_Chi_Minh\"",
                    d.time_zone
                ),
            ));
            None
        }
    };
    let prefix_ok = (1..=6).contains(&d.tracking_prefix.len())
        && d.tracking_prefix
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    if !prefix_ok {
        errors.push(err(
            "tracking_prefix",
            format!(
                "tracking_prefix {:?} must be 1 to 6 capital letters or digits, e.g. \"PA\"",
                d.tracking_prefix
            ),
        ));
    }
    if d.store.queue_capacity == 0 {
        errors.push(err(
            "queue_capacity",
            "queue_capacity must be at least 1".into(),
        ));
    }
    if d.dedupe.photo_distance > 8 {
        errors.push(err(
            "photo_distance",
            "photo_distance above 8 bits would match different photos; use 0 to 8 (4 is measured to be safe)".into(),
        ));
    }
    if !(0.0..=1_000.0).contains(&d.dedupe.similar_distance_m)
        || !(0.0..=1.0).contains(&d.dedupe.similar_score)
        || !(0.0..=1.0).contains(&d.dedupe.similar_score_near)
    {
        errors.push(err(
            "similar_score",
            "similar_score and similar_score_near are between 0 and 1, similar_distance_m between 0 and 1000 (metres)".into(),
        ));
    }
    if d.store.batch_max == 0 {
        errors.push(err("batch_max", "batch_max must be at least 1".into()));
    }
    if d.forward.batch == 0 {
        errors.push(err("batch", "batch must be at least 1".into()));
    }
    if d.forward.max_attempts == 0 {
        errors.push(err(
            "max_attempts",
            "max_attempts must be at least 1".into(),
        ));
    }
    let mut codes = HashSet::new();
    for c in &d.categories {
        if let Some((phrase, w)) = c.keywords.iter().find(|(p, w)| {
            **w <= 0.0 || !w.is_finite() || crate::pipeline::text::dedupe_key(p).chars().count() < 2
        }) {
            errors.push(err(
                "keywords",
                format!(
                    "category {:?}: keyword {phrase:?} = {w} must be a phrase of at least two letters with a weight above 0",
                    c.code
                ),
            ));
        }
        if !is_code(&c.code) {
            errors.push(err(
                "code",
                format!("category code {:?} must use a-z, 0-9 and _ only", c.code),
            ));
        }
        if !codes.insert(c.code.as_str()) {
            errors.push(err(
                "code",
                format!("category code {:?} appears twice", c.code),
            ));
        }
    }
    for r in &d.routes {
        if let Some(c) = &r.category
            && !codes.contains(c.as_str())
        {
            errors.push(err(
                "routes",
                format!(
                    "route to {:?}: category {c:?} is not one of the [[categories]] codes",
                    r.unit
                ),
            ));
        }
        if let Some(w) = &r.ward
            && !d.place.wards.has(w)
        {
            errors.push(err(
                "routes",
                format!(
                    "route to {:?}: ward {w:?} is not a code of [place] wards_file",
                    r.unit
                ),
            ));
        }
    }
    if !d.categories.is_empty() && !codes.contains(d.default_category.as_str()) {
        errors.push(err(
            "default_category",
            format!(
                "default_category {:?} is not one of the [[categories]] codes",
                d.default_category
            ),
        ));
    }
    // The units a report can be routed to: a sink naming another never gets an event.
    let units: HashSet<&str> = d
        .categories
        .iter()
        .filter_map(|c| c.unit.as_deref())
        .chain(d.routes.iter().map(|r| r.unit.as_str()))
        .collect();
    for (name, sink) in d.sinks.iter_mut() {
        if !is_name(name) {
            errors.push(err(
                name,
                format!("sink name {name:?} must use a-z, 0-9, '-' and '_' only"),
            ));
        }
        sink::validate(
            name,
            sink,
            &sink::Known {
                base,
                state_dir: &d.state_dir,
                categories: &codes,
                units: &units,
            },
            &mut |key, msg| errors.push(err(key, msg)),
        );
    }
    match (errors.is_empty(), tz) {
        (true, Some(tz)) => Ok((d, tz)),
        _ => Err(errors),
    }
}

fn list_channel_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        format!(
            "cannot read the channels folder: {e}; create it or set channels_dir in phananh.toml"
        )
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    paths.sort();
    Ok(paths)
}

fn load_channel(path: &Path) -> Result<ChannelConfig, Vec<ConfigError>> {
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    let base = path.parent().unwrap_or(Path::new("/"));
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![ConfigError::new(path, None, format!("cannot read: {e}"))])?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| vec![ConfigError::from_toml(path, &text, &e)])?;
    let mut errors = Vec::new();
    if !is_name(&name) {
        errors.push(ConfigError::new(
            path,
            None,
            format!("channel name {name:?} (the file name) must use a-z, 0-9, '-' and '_' only"),
        ));
    }
    let kinds: Vec<&str> = ChannelKind::ALL.iter().map(|k| k.as_str()).collect();
    let kind = match table.get("kind") {
        None => {
            errors.push(ConfigError::new(
                path,
                Some((1, 1)),
                format!(
                    "missing `kind`; start the file with kind = \"maildir\" (known kinds: {})",
                    kinds.join(", ")
                ),
            ));
            None
        }
        Some(toml::Value::String(k)) => match ChannelKind::parse(k) {
            Some(k) => Some(k),
            None => {
                errors.push(ConfigError::at_key(
                    path,
                    &text,
                    "kind",
                    format!("unknown kind {k:?}; known kinds: {}", kinds.join(", ")),
                ));
                None
            }
        },
        Some(_) => {
            errors.push(ConfigError::at_key(
                path,
                &text,
                "kind",
                "`kind` must be a string",
            ));
            None
        }
    };
    let settings = match kind {
        Some(ChannelKind::Maildir) => match parse_file::<MaildirConfig>(path) {
            Ok((text, _, mut m)) => {
                m.path = resolve(base, &m.path);
                if m.concurrency == 0 {
                    errors.push(ConfigError::at_key(
                        path,
                        &text,
                        "concurrency",
                        "concurrency must be at least 1",
                    ));
                }
                if m.scan_interval.is_zero() {
                    errors.push(ConfigError::at_key(
                        path,
                        &text,
                        "scan_interval",
                        "scan_interval must be more than 0s",
                    ));
                }
                if let Some(ack) = &m.ack {
                    for (key, msg) in ack.problems() {
                        errors.push(ConfigError::at_key(path, &text, key, msg));
                    }
                }
                errors.extend(prepare_ack(&mut m.ack, base, path, &text));
                Some(ChannelSettings::Maildir(m))
            }
            Err(e) => {
                errors.extend(e);
                None
            }
        },
        Some(ChannelKind::Imap) => match parse_file::<ImapConfig>(path) {
            Ok((text, _, mut m)) => {
                m.ca_file = m.ca_file.map(|p| resolve(base, &p));
                m.password_file = m.password_file.map(|p| resolve(base, &p));
                m.oauth2_token_file = m.oauth2_token_file.map(|p| resolve(base, &p));
                for (key, msg) in m.problems() {
                    errors.push(ConfigError::at_key(path, &text, key, msg));
                }
                errors.extend(prepare_ack(&mut m.ack, base, path, &text));
                Some(ChannelSettings::Imap(m))
            }
            Err(e) => {
                errors.extend(e);
                None
            }
        },
        Some(ChannelKind::Feed) => match parse_file::<FeedConfig>(path) {
            Ok((text, _, mut m)) => {
                m.auth_header_file = m.auth_header_file.map(|p| resolve(base, &p));
                for (key, msg) in m.problems() {
                    errors.push(ConfigError::at_key(path, &text, key, msg));
                }
                Some(ChannelSettings::Feed(m))
            }
            Err(e) => {
                errors.extend(e);
                None
            }
        },
        Some(ChannelKind::Facebook) => match parse_file::<FacebookConfig>(path) {
            Ok((text, _, mut m)) => {
                for p in [
                    &mut m.app_secret_file,
                    &mut m.verify_token_file,
                    &mut m.page_access_token_file,
                ] {
                    *p = p.take().map(|p| resolve(base, &p));
                }
                for (key, msg) in m.problems() {
                    errors.push(ConfigError::at_key(path, &text, key, msg));
                }
                Some(ChannelSettings::Facebook(m))
            }
            Err(e) => {
                errors.extend(e);
                None
            }
        },
        None => None,
    };
    match settings {
        Some(settings) if errors.is_empty() => Ok(ChannelConfig {
            name,
            path: path.to_path_buf(),
            settings,
        }),
        _ => Err(errors),
    }
}

/// Makes an `[ack]` table's paths absolute and reads its `body_file` into `body`, so a template
/// with a mistake is refused at load, not at the first send.
fn prepare_ack(
    ack: &mut Option<AckConfig>,
    base: &Path,
    path: &Path,
    text: &str,
) -> Vec<ConfigError> {
    let Some(ack) = ack else {
        return Vec::new();
    };
    ack.smtp.ca_file = ack.smtp.ca_file.take().map(|p| resolve(base, &p));
    ack.smtp.password_file = ack.smtp.password_file.take().map(|p| resolve(base, &p));
    let Some(file) = ack.body_file.take().map(|p| resolve(base, &p)) else {
        return Vec::new();
    };
    let mut errors = Vec::new();
    match std::fs::read_to_string(&file) {
        Ok(body) => {
            if let Err(msg) = ack::check_template(&body) {
                errors.push(ConfigError::at_key(
                    path,
                    text,
                    "body_file",
                    format!("{}: {msg}", file.display()),
                ));
            }
            ack.body = Some(body);
        }
        Err(e) => errors.push(ConfigError::at_key(
            path,
            text,
            "body_file",
            format!("cannot read {}: {e}", file.display()),
        )),
    }
    ack.body_file = Some(file);
    errors
}

fn is_code(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests;
