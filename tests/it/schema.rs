//! docs/report.schema.json is the contract the dispatch system codes against. Real events from the
//! real binary must validate, and the schema must be strict enough to notice when code and
//! contract drift apart.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn validator() -> jsonschema::Validator {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/report.schema.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    // In 2020-12 `format` is only an annotation unless asked for; we want date-time and email checked.
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("docs/report.schema.json is not a valid schema")
}

/// One "instance path: message" line per violation; empty when the event is valid.
pub fn violations(v: &jsonschema::Validator, event: &Value) -> Vec<String> {
    v.iter_errors(event)
        .map(|e| match e.instance_path.to_string() {
            root if root.is_empty() => format!("/: {e}"),
            at => format!("{at}: {e}"),
        })
        .collect()
}

/// Runs the binary against `config` and returns stdout; any failure fails the test.
fn phananh(config: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_phananh"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("PHANANH_CONFIG")
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert!(
        out.status.success(),
        "phananh {args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// config/quickstart.toml with absolute paths in a temp dir, plus a masked and a contact-less
/// sink: the schema has to accept every shape a sink can receive, not only the full one.
fn install(dir: &Path) -> PathBuf {
    let d = dir.display();
    let config = dir.join("phananh.toml");
    std::fs::write(
        &config,
        format!(
            r#"state_dir = "{d}/state"
channels_dir = "{d}/channels"
tracking_prefix = "PA"
time_zone = "Asia/Ho_Chi_Minh"
default_category = "chua_phan_loai"

[sinks.spool]
kind = "spool"
dir = "spool"

[sinks.masked]
kind = "spool"
dir = "spool-masked"
contact = "masked"

[sinks.none]
kind = "spool"
dir = "spool-none"
contact = "none"

[[categories]]
code = "chua_phan_loai"
name = "Chưa phân loại"
unit = "trung_tam_giam_sat"
"#
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("channels")).unwrap();
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(dir.join("Maildir").join(sub)).unwrap();
    }
    std::fs::write(
        dir.join("channels/mail.toml"),
        format!("kind = \"maildir\"\npath = \"{d}/Maildir\"\n"),
    )
    .unwrap();
    config
}

fn fixtures() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/email");
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn export(config: &Path) -> Vec<Value> {
    phananh(config, &["reports", "export", "--format", "jsonl"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn real_events_match_the_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let config = install(tmp.path());
    let files = fixtures();
    let mut args = vec!["ingest", "--channel", "mail"];
    args.extend(files.iter().map(String::as_str));
    phananh(&config, &args);

    // (where, event) from the export and from every sink's spool folder.
    let mut events: Vec<(String, Value)> = export(&config)
        .into_iter()
        .enumerate()
        .map(|(i, e)| (format!("export line {}", i + 1), e))
        .collect();
    let exported = events.len();
    for sink in ["spool", "spool-masked", "spool-none"] {
        let mut n = 0;
        for entry in std::fs::read_dir(tmp.path().join("state").join(sink)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|x| x == "json") {
                let text = std::fs::read_to_string(&path).unwrap();
                events.push((
                    format!("{sink}/{}", path.file_name().unwrap().display()),
                    serde_json::from_str(&text).unwrap(),
                ));
                n += 1;
            }
        }
        // A sink that received nothing would make "all valid" vacuous for its shape.
        assert!(n >= 10, "only {n} events in {sink}/");
    }
    assert!(exported >= 10, "only {exported} events exported");

    let v = validator();
    let failures: Vec<String> = events
        .iter()
        .flat_map(|(at, e)| {
            violations(&v, e)
                .into_iter()
                .map(move |m| format!("{at} {m}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} violations of docs/report.schema.json:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Fixture 11b repeats 11a: the duplicate branch (duplicate_of set) must have been validated too.
    assert!(
        events.iter().any(|(_, e)| e["event"] == "report.duplicate"),
        "no report.duplicate among {} events",
        events.len()
    );
}

#[test]
fn the_schema_rejects_drift() {
    let tmp = tempfile::tempdir().unwrap();
    let config = install(tmp.path());
    let one = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/email/01-utf8-nfc.eml"
    );
    phananh(
        &config,
        &["ingest", "--no-forward", "--channel", "mail", one],
    );
    let event = export(&config).remove(0);
    let v = validator();
    // Without this the rejections below could pass for the wrong reason.
    assert_eq!(violations(&v, &event), Vec::<String>::new(), "{event:#}");

    let changed = |f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut e = event.clone();
        f(e.as_object_mut().unwrap());
        e
    };
    // A field the code added but the contract does not know.
    assert!(!v.is_valid(&changed(&|e| {
        e.insert("priority".into(), Value::from(1));
    })));
    // A field the contract promises that the code stopped sending.
    assert!(!v.is_valid(&changed(&|e| {
        e.remove("tracking_code");
    })));
    // 0 and O are not in the tracking-code alphabet.
    assert!(!v.is_valid(&changed(&|e| {
        e.insert("tracking_code".into(), Value::from("PA-0000-OOOO"));
    })));
    // And not over-strict: a `contact = "none"` sink legitimately drops the reporter.
    assert!(v.is_valid(&changed(&|e| {
        e.remove("reporter");
    })));
}
