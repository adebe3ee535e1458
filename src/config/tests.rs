use super::*;
use std::fs;

fn write(dir: &Path, rel: &str, text: &str) -> PathBuf {
    let p = dir.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, text).unwrap();
    p
}

#[test]
fn a_minimal_config_loads_with_defaults_and_resolved_paths() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(dir.path(), "phananh.toml", "state_dir = \"state\"\n");
    write(
        dir.path(),
        "channels/mail.toml",
        "kind = \"maildir\"\npath = \"../Maildir\"\n",
    );
    let c = load(&main).unwrap();
    assert_eq!(c.daemon.state_dir, dir.path().join("state"));
    assert_eq!(c.tz, chrono_tz::Asia::Ho_Chi_Minh);
    let mail = &c.channels["mail"];
    assert_eq!(mail.kind(), ChannelKind::Maildir);
    let ChannelSettings::Maildir(m) = &mail.settings else {
        panic!("maildir expected")
    };
    assert_eq!(m.path, dir.path().join("Maildir"));
    assert_eq!(m.after_ingest, AfterIngest::Seen);
    assert_eq!(
        c.daemon.sinks["spool"].dir,
        Some(dir.path().join("state/spool"))
    );
}

#[test]
fn every_error_in_every_file_is_reported_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(
        dir.path(),
        "phananh.toml",
        "state_dir = \"s\"\ntime_zone = \"Mars/Olympus\"\ntracking_prefix = \"pa\"\n[forward]\nbatch = 0\n",
    );
    write(
        dir.path(),
        "channels/a.toml",
        "kind = \"maildir\"\npath = \"M\"\npathh = \"x\"\n",
    );
    write(dir.path(), "channels/b.toml", "kind = \"telegram\"\n");
    write(dir.path(), "channels/c.toml", "path = \"M\"\n");
    write(
        dir.path(),
        "channels/d.toml",
        "kind = \"maildir\"\npath = \"M\"\nafter_ingest = \"delete\"\n",
    );
    let errs = load(&main).unwrap_err().0;
    let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    let has = |needle: &str| text.iter().any(|t| t.contains(needle));
    assert!(has("phananh.toml:2:1: unknown time zone"), "{text:#?}");
    assert!(has("phananh.toml:3:1: tracking_prefix"), "{text:#?}");
    assert!(
        has("phananh.toml:5:1: batch must be at least 1"),
        "{text:#?}"
    );
    assert!(has("a.toml:3:1: unknown field `pathh`"), "{text:#?}");
    assert!(has("b.toml:1:1: unknown kind \"telegram\""), "{text:#?}");
    assert!(has("c.toml:1:1: missing `kind`"), "{text:#?}");
    assert!(has("d.toml:3:16: invalid after_ingest"), "{text:#?}");
    assert_eq!(errs.len(), 7, "{text:#?}");
}

#[test]
fn an_inline_secret_is_refused_once_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(dir.path(), "phananh.toml", "state_dir = \"s\"\n");
    write(
        dir.path(),
        "channels/m.toml",
        "kind = \"maildir\"\npath = \"M\"\npassword = \"hunter2\"\n",
    );
    let errs = load(&main).unwrap_err().0;
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].position, Some((3, 1)));
    assert!(errs[0].message.contains("password_file"));
    assert!(!errs[0].to_string().contains("hunter2"));
}

#[test]
fn syntax_errors_point_at_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(dir.path(), "phananh.toml", "state_dir = \"s\"\nlisten = \n");
    fs::create_dir_all(dir.path().join("channels")).unwrap();
    let errs = load(&main).unwrap_err().0;
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].position.map(|p| p.0), Some(2), "{errs:#?}");
}

#[test]
fn the_shipped_configs_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let c = load(&root.join("config/quickstart.toml")).unwrap();
    assert!(c.channels.contains_key("mail"));
    let report = check(&root.join("config/phananh.toml"));
    // The production file names /etc/phananh/channels, absent on a build machine: only that fails.
    assert!(
        report.files[0].errors.is_empty(),
        "{:#?}",
        report.files[0].errors
    );
}

/// The annotated production file states the true defaults, and the README documents every key
/// in it and in the channel example, so the reference cannot drift from the code.
#[test]
fn the_reference_files_and_readme_match_the_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let annotated = fs::read_to_string(root.join("config/phananh.toml")).unwrap();
    let from_file: DaemonConfig = toml::from_str(&annotated).unwrap();
    let defaults: DaemonConfig = toml::from_str("").unwrap();
    let same_but_paths = DaemonConfig {
        channels_dir: defaults.channels_dir.clone(),
        ..from_file.clone()
    };
    let defaults_with_categories = DaemonConfig {
        categories: from_file.categories.clone(),
        categories_file: from_file.categories_file.clone(),
        // The geography files are the shipped city's, not defaults (none by default).
        place: from_file.place.clone(),
        ..defaults
    };
    assert_eq!(
        same_but_paths, defaults_with_categories,
        "config/phananh.toml must show the defaults"
    );

    let readme = fs::read_to_string(root.join("README.md")).unwrap();
    let mut keys = Vec::new();
    fn collect(t: &toml::Table, out: &mut Vec<String>) {
        for (k, v) in t {
            out.push(k.clone());
            match v {
                // A lookup table's keys are data (service codes), not settings.
                toml::Value::Table(_) if k == "service_codes" || k == "categories" => {}
                toml::Value::Table(t) => collect(t, out),
                toml::Value::Array(a) => a
                    .iter()
                    .filter_map(|v| v.as_table())
                    .for_each(|t| collect(t, out)),
                _ => {}
            }
        }
    }
    collect(&annotated.parse::<toml::Table>().unwrap(), &mut keys);
    for file in [
        "channels/mail.toml",
        "channels/imap.toml.example",
        "channels/facebook.toml.example",
        "channels/open311.toml.example",
        "channels/app-feed.toml.example",
    ] {
        let channel = fs::read_to_string(root.join(file)).unwrap();
        let uncommented: String = channel
            .lines()
            .map(|l| l.trim_start_matches("# "))
            .map(|l| {
                // A table header may carry a comment after it.
                let head = l.split(" #").next().unwrap_or(l).trim();
                if head.starts_with('[') && head.ends_with(']') {
                    head
                } else {
                    l
                }
            })
            .filter(|l| l.contains(" = ") || (l.starts_with('[') && l.ends_with(']')))
            .collect::<Vec<_>>()
            .join("\n");
        collect(&uncommented.parse::<toml::Table>().unwrap(), &mut keys);
    }
    let undocumented: Vec<&String> = keys
        .iter()
        .filter(|k| *k != "spool")
        .filter(|k| {
            ![
                format!("`{k}`"),
                format!("[{k}]"),
                format!("[{k}."),
                format!("[[{k}]]"),
            ]
            .iter()
            .any(|f| readme.contains(f.as_str()))
        })
        .collect();
    assert!(
        undocumented.is_empty(),
        "keys missing from the README reference: {undocumented:?}"
    );
}

#[test]
fn an_ack_table_loads_its_body_file_and_its_sender_counts_as_our_own() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(dir.path(), "phananh.toml", "state_dir = \"state\"\n");
    write(dir.path(), "channels/ack.txt", "Mã: {code}\n");
    write(
        dir.path(),
        "channels/mail.toml",
        "kind = \"maildir\"\npath = \"M\"\n[ack]\nfrom = \"IOC <DTTM@hue.example.vn>\"\nbody_file = \"ack.txt\"\n[ack.smtp]\nhost = \"relay.hue.example.vn\"\nusername = \"dttm\"\npassword_file = \"smtp.pass\"\n",
    );
    let c = load(&main).unwrap();
    let ack = c.channels["mail"].ack().unwrap();
    assert_eq!(ack.body(), "Mã: {code}\n");
    assert_eq!(ack.smtp.port(), 465);
    assert_eq!(
        ack.smtp.password_file,
        Some(dir.path().join("channels/smtp.pass"))
    );
    assert!(
        c.email_defaults()
            .own_addresses
            .contains(&"dttm@hue.example.vn".to_string())
    );
    assert!(
        c.daemon.email.own_addresses.is_empty(),
        "the file's own list"
    );
    assert_eq!(ack.max_age, std::time::Duration::from_secs(3 * 86400));
}

#[test]
fn ack_mistakes_are_refused_with_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(dir.path(), "phananh.toml", "state_dir = \"state\"\n");
    write(
        dir.path(),
        "channels/mail.toml",
        "kind = \"maildir\"\npath = \"M\"\n[ack]\nfrom = \"not an address\"\nsubject = \"[{code}] {ten}\"\nbody_file = \"missing.txt\"\n[ack.smtp]\nhost = \"relay.example.vn\"\ntls = \"none\"\nusername = \"u\"\n",
    );
    let errs = load(&main).unwrap_err().0;
    let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    let has = |needle: &str| text.iter().any(|t| t.contains(needle));
    assert!(has("mail.toml:4:1: from \"not an address\""), "{text:#?}");
    assert!(has("mail.toml:5:1: unknown placeholder {ten}"), "{text:#?}");
    assert!(has("mail.toml:6:1: cannot read"), "{text:#?}");
    assert!(has("in clear"), "{text:#?}");
    assert!(has("no password"), "{text:#?}");
}

#[test]
fn the_facebook_example_loads_and_mistakes_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(dir.path(), "phananh.toml", "state_dir = \"state\"\n");
    let example = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("channels/facebook.toml.example"),
    )
    .unwrap();
    write(dir.path(), "channels/fb.toml", &example);
    let c = load(&main).unwrap();
    let ChannelSettings::Facebook(f) = &c.channels["fb"].settings else {
        panic!("facebook expected")
    };
    assert_eq!(f.assemble_quiet, std::time::Duration::from_secs(180));
    assert_eq!(f.media_hosts, ["fbcdn.net", "fbsbx.com"]);
    write(
        dir.path(),
        "channels/fb.toml",
        "kind = \"facebook\"\npage_id = \"thanh-pho-hue\"\napp_secret = \"x\"\ngraph_api_base = \"http://graph.example.com\"\n",
    );
    let text: Vec<String> = load(&main)
        .unwrap_err()
        .0
        .iter()
        .map(|e| e.to_string())
        .collect();
    let has = |needle: &str| text.iter().any(|t| t.contains(needle));
    assert!(
        has("fb.toml:3:1: `app_secret` holds a secret inline"),
        "{text:#?}"
    );
    write(
        dir.path(),
        "channels/fb.toml",
        "kind = \"facebook\"\npage_id = \"thanh-pho-hue\"\napp_secret_file = \"s\"\ngraph_api_base = \"http://graph.example.com\"\n",
    );
    let text: Vec<String> = load(&main)
        .unwrap_err()
        .0
        .iter()
        .map(|e| e.to_string())
        .collect();
    let has = |needle: &str| text.iter().any(|t| t.contains(needle));
    assert!(has("must be the page's numeric id"), "{text:#?}");
    assert!(has("missing verify_token_file"), "{text:#?}");
    assert!(has("graph_api_base must be https://"), "{text:#?}");
}

#[test]
fn sinks_of_every_kind_load_with_their_defaults() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "secrets/amqp-url", "amqp://u:p@mq:5672/%2f\n");
    let main = write(
        dir.path(),
        "phananh.toml",
        "state_dir = \"state\"\n\
         [sinks.ops]\nkind = \"amqp\"\nurl_file = \"secrets/amqp-url\"\n\
         [sinks.hook]\nkind = \"http\"\nurl = \"https://dispatch.example.vn/phananh\"\nsecret_env = \"HOOK_KEY\"\n\
         events = [\"report.created\"]\nrate_per_second = 20\n",
    );
    write(dir.path(), "channels/.keep", "");
    let c = load(&main).unwrap();
    let ops = c.daemon.sinks["ops"].amqp();
    assert_eq!(
        ops.url,
        AmqpUrl::Secret(secrets::SecretRef::File(
            dir.path().join("secrets/amqp-url")
        ))
    );
    assert_eq!(ops.exchange, "phananh.reports");
    assert_eq!(ops.routing_key, "report.{category}.{unit}");
    assert!(!ops.declare);
    assert_eq!(ops.window, 256);
    let hook = c.daemon.sinks["hook"].http();
    assert_eq!(hook.signature_header, "X-Phananh-Signature");
    assert_eq!(hook.timeout, std::time::Duration::from_secs(10));
    assert_eq!(hook.window, 8);
    assert!(!c.daemon.sinks.contains_key("spool"), "listed sinks only");
}

#[test]
fn sink_mistakes_are_refused_with_their_place_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(
        dir.path(),
        "phananh.toml",
        "state_dir = \"state\"\n\
         [sinks.a]\nkind = \"amqp\"\nurl = \"amqp://guest:guest@mq:5672/%2f\"\nsecret_file = \"x\"\n\
         [sinks.b]\nkind = \"amqp\"\nurl_env = \"MQ\"\nrouting_key = \"report.{categroy}\"\nqueue = \"q\"\n\
         [sinks.c]\nkind = \"http\"\nurl = \"http://dispatch.example.vn/hook\"\nevents = [\"report.closed\"]\n\
         [sinks.d]\nkind = \"spool\"\ndir = \"d\"\nexchange = \"x\"\n\
         [sinks.e]\nkind = \"http\"\n",
    );
    write(dir.path(), "channels/.keep", "");
    let text: Vec<String> = load(&main)
        .unwrap_err()
        .0
        .iter()
        .map(|e| e.to_string())
        .collect();
    let has = |needle: &str| text.iter().any(|t| t.contains(needle));
    assert!(
        has("phananh.toml:4:1: sink \"a\": the url holds a password inline"),
        "{text:#?}"
    );
    assert!(
        has("`secret_file` does not apply to a sink of kind \"amqp\""),
        "{text:#?}"
    );
    assert!(
        has("routing_key placeholder {categroy} is unknown"),
        "{text:#?}"
    );
    assert!(
        has("declared by phananh only with `declare = true`"),
        "{text:#?}"
    );
    assert!(has("http:// to a host other than loopback"), "{text:#?}");
    assert!(has("unknown event type \"report.closed\""), "{text:#?}");
    assert!(
        has("`exchange` does not apply to a sink of kind \"spool\""),
        "{text:#?}"
    );
    assert!(has("sink \"e\" of kind \"http\" needs `url"), "{text:#?}");
}
