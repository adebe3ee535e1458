//! `phananh run` as systemd would run it: Maildir in, spool out, signals, reloads, health.

use super::common::{Env, fixture, http_get, message, signal, wait_for};
use std::time::{Duration, Instant};

fn stop(env: &Env, mut child: super::common::Daemon) {
    signal(&child, libc::SIGTERM);
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no exit after SIGTERM:\n{}",
            env.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{}", env.log());
}

/// Names, addresses and numbers from the fixtures used below: none may reach the log.
const PERSONAL: &[&str] = &[
    "Nguyễn Văn An",
    "an.nguyen@example.com",
    "0905 123 456",
    "+84905123456",
    "Hoàng Minh Tuấn",
    "tuan.hoang@example.vn",
    "914 222 333",
    "citizen7@example.com",
];

#[test]
fn mail_delivered_to_the_maildir_is_stored_forwarded_and_moved_to_cur() {
    let env = Env::new("", "");
    // One message waiting before start, the rest delivered while running.
    env.deliver(
        "1700000000.M1P1.mx",
        &std::fs::read(fixture("01-utf8-nfc.eml")).unwrap(),
    );
    let child = env.start();
    assert!(
        wait_for(Duration::from_secs(20), || http_get(env.port, "/healthz")
            .is_some_and(|r| r.contains("200 OK"))),
        "{}",
        env.log()
    );
    env.deliver(
        "1700000001.M2P1.mx",
        &std::fs::read(fixture("04-html-only.eml")).unwrap(),
    );
    env.deliver("1700000002.M3P1.mx:2,F", &message(7));
    env.deliver(
        "1700000003.M4P1.mx",
        &std::fs::read(fixture("12-malformed-mime.eml")).unwrap(),
    );
    let done = wait_for(Duration::from_secs(20), || {
        env.spool_events().len() == 3 && env.count(&env.maildir().join("new"), "") == 0
    });
    assert!(
        done,
        "spool {} new {}\n{}",
        env.spool_events().len(),
        env.count(&env.maildir().join("new"), ""),
        env.log()
    );
    let cur: Vec<String> = std::fs::read_dir(env.maildir().join("cur"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(cur.len(), 4, "{cur:?}");
    assert!(
        cur.contains(&"1700000002.M3P1.mx:2,FS".to_string()),
        "{cur:?}"
    );
    assert!(
        cur.iter().all(|n| n.contains(":2,") && n.contains('S')),
        "{cur:?}"
    );
    let health = http_get(env.port, "/healthz").unwrap();
    assert!(health.contains("\"status\":\"ok\""), "{health}");
    stop(&env, child);

    let log = env.log();
    assert!(log.contains("Message quarantined"), "{log}");
    assert!(
        log.contains("Stored report."),
        "debug logging was on: {log}"
    );
    for p in PERSONAL {
        assert!(!log.contains(p), "personal data {p:?} in the log:\n{log}");
    }
}

#[test]
fn an_idle_daemon_does_not_spin() {
    // Regression: the daemon's own read_dir of new/ raised inotify events that woke another scan,
    // forever: 100% CPU while idle.
    let env = Env::new("", "");
    env.deliver("1700000000.M1P1.mx", &message(1));
    let child = env.start();
    assert!(
        wait_for(Duration::from_secs(20), || env.spool_events().len() == 1),
        "{}",
        env.log()
    );
    super::common::assert_idles(child.id(), || env.log());
    stop(&env, child);
}

#[test]
fn a_message_that_cannot_leave_new_does_not_spin_the_channel() {
    // Regression: a stored message whose move failed counted as progress, so the channel rescanned
    // at once, forever (100% CPU, a log line per pass).
    let env = Env::new("", "");
    let child = env.start();
    assert!(
        wait_for(Duration::from_secs(20), || env
            .log()
            .contains("Maildir channel started")),
        "{}",
        env.log()
    );
    std::fs::remove_dir(env.maildir().join("cur")).unwrap();
    env.deliver("1700000000.M1P1.mx", &message(1));
    assert!(
        wait_for(Duration::from_secs(20), || env.spool_events().len() == 1),
        "{}",
        env.log()
    );
    super::common::assert_idles(child.id(), || env.log());
    assert!(
        env.log().contains("cannot move the message out of new/"),
        "{}",
        env.log()
    );
    assert!(env.maildir().join("new/1700000000.M1P1.mx").exists());
    stop(&env, child);
}

#[test]
fn one_message_that_cannot_be_stored_does_not_delay_the_others() {
    // The photo in fixture 06 goes to media/10/…; a file in that place makes storing it fail.
    let env = Env::new("", "");
    std::fs::create_dir_all(env.path("state/media")).unwrap();
    std::fs::write(env.path("state/media/10"), "in the way").unwrap();
    let child = env.start();
    env.deliver(
        "1700000000.M1P1.mx",
        &std::fs::read(fixture("06-photo-exif-hue.eml")).unwrap(),
    );
    assert!(
        wait_for(Duration::from_secs(20), || env
            .log()
            .contains("Cannot store message")),
        "{}",
        env.log()
    );
    // Before the fix the channel gave up and restarted with a backoff growing to minutes.
    std::thread::sleep(Duration::from_secs(6));
    for n in 0..3 {
        env.deliver(&format!("17000000{n}1.M{n}P2.mx"), &message(n));
        let want = n + 1;
        assert!(
            wait_for(Duration::from_secs(3), || env.spool_events().len() == want),
            "message {n} waited:\n{}",
            env.log()
        );
    }
    assert!(env.maildir().join("new/1700000000.M1P1.mx").exists());
    // Once the obstacle is gone, the periodic scan (1 s here) takes the message.
    std::fs::remove_file(env.path("state/media/10")).unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || env.spool_events().len() == 4),
        "{}",
        env.log()
    );
    stop(&env, child);
}

#[test]
fn a_message_over_the_size_limit_is_set_aside_unread() {
    let env = Env::new("", "max_message_size = \"100KB\"");
    let child = env.start();
    let mut big = message(1);
    big.extend(std::iter::repeat_n(b'x', 200_000));
    env.deliver("1700000000.M1P1.mx", &big);
    let aside = env.maildir().join(".Quarantine/cur/1700000000.M1P1.mx:2,S");
    assert!(
        wait_for(Duration::from_secs(20), || aside.exists()),
        "{}",
        env.log()
    );
    stop(&env, child);
    let list = env.cli_ok(&["quarantine", "list"]);
    assert!(
        list.contains("over max_message_size 100.0 kB: not read"),
        "{list}"
    );
    let raw = env.cli(&["quarantine", "show", "1", "--raw"]).stdout;
    assert_eq!(raw.len(), 64 << 10);
    assert_eq!(std::fs::read(&aside).unwrap(), big);
    let retry = env.cli(&["quarantine", "retry", "1"]);
    assert_eq!(retry.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&retry.stdout).contains("only the first 64 KiB were kept"));
}

#[test]
fn machine_mail_is_stored_and_moved_but_never_reported() {
    let env = Env::new("[email]\nown_addresses = [\"dttm@hue.example.vn\"]", "");
    for (i, name) in ["13-auto-reply.eml", "14-bounce.eml", "15-mailing-list.eml"]
        .iter()
        .enumerate()
    {
        env.deliver(
            &format!("170000000{i}.M{i}P1.mx"),
            &std::fs::read(fixture(name)).unwrap(),
        );
    }
    env.deliver("1700000009.M9P1.mx", &message(9));
    let child = env.start();
    let done = wait_for(Duration::from_secs(20), || {
        env.count(&env.maildir().join("cur"), "") == 4 && env.spool_events().len() == 1
    });
    assert!(done, "{}", env.log());
    stop(&env, child);
    let rules: Vec<String> = env
        .db()
        .prepare("SELECT automated FROM inbox WHERE automated IS NOT NULL AND report_id IS NULL ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(rules.len(), 3, "{rules:?}");
    assert!(
        rules.contains(&"bounce".to_string()) && rules.contains(&"auto_submitted".to_string()),
        "{rules:?}"
    );
    assert!(env.log().contains("automated=3"), "{}", env.log());
}

#[test]
fn move_after_ingest_files_messages_into_the_named_folder() {
    let env = Env::new("", "after_ingest = \"move:.Processed\"");
    env.deliver("1700000000.M1P1.mx", &message(1));
    let child = env.start();
    let moved = env.maildir().join(".Processed/cur/1700000000.M1P1.mx:2,S");
    assert!(
        wait_for(Duration::from_secs(20), || moved.exists()),
        "{}",
        env.log()
    );
    stop(&env, child);
}

#[test]
fn sighup_applies_channel_changes_and_a_bad_file_keeps_the_running_config() {
    let env = Env::new("", "");
    let child = env.start();
    assert!(
        wait_for(Duration::from_secs(20), || env
            .log()
            .contains("phananh is running")),
        "{}",
        env.log()
    );

    // Added channel.
    std::fs::write(
        env.path("channels/second.toml"),
        "kind = \"maildir\"\npath = \"../Second\"\nscan_interval = \"1s\"\n",
    )
    .unwrap();
    signal(&child, libc::SIGHUP);
    assert!(
        wait_for(Duration::from_secs(10), || env.log().contains("added=1")),
        "{}",
        env.log()
    );
    assert!(
        wait_for(Duration::from_secs(10), || env.path("Second/new").is_dir()
            && env.path("Second/tmp").is_dir()),
        "{}",
        env.log()
    );
    std::fs::write(env.path("Second/tmp/m1"), message(1)).unwrap();
    std::fs::rename(env.path("Second/tmp/m1"), env.path("Second/new/m1")).unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || env.spool_events().len() == 1),
        "{}",
        env.log()
    );

    // A broken file: refused, and both channels keep working.
    std::fs::write(
        env.path("channels/third.toml"),
        "kind = \"maildir\"\npaht = \"x\"\n",
    )
    .unwrap();
    signal(&child, libc::SIGHUP);
    assert!(
        wait_for(Duration::from_secs(10), || env
            .log()
            .contains("Reload refused")),
        "{}",
        env.log()
    );
    assert!(
        env.log().contains("third.toml:2:1: unknown field `paht`"),
        "{}",
        env.log()
    );
    env.deliver("m2", &message(2));
    std::fs::write(env.path("Second/tmp/m3"), message(3)).unwrap();
    std::fs::rename(env.path("Second/tmp/m3"), env.path("Second/new/m3")).unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || env.spool_events().len() == 3),
        "{}",
        env.log()
    );

    // Removed channel: its Maildir is no longer read.
    std::fs::remove_file(env.path("channels/third.toml")).unwrap();
    std::fs::remove_file(env.path("channels/second.toml")).unwrap();
    signal(&child, libc::SIGHUP);
    assert!(
        wait_for(Duration::from_secs(10), || env.log().contains("removed=1")),
        "{}",
        env.log()
    );
    std::fs::write(env.path("Second/tmp/m4"), message(4)).unwrap();
    std::fs::rename(env.path("Second/tmp/m4"), env.path("Second/new/m4")).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert!(env.path("Second/new/m4").exists());
    stop(&env, child);
}

#[test]
fn hostile_mail_does_not_stop_the_daemon() {
    let env = Env::new("", "");
    let child = env.start();
    env.deliver("a", b"\x00\x01\x02 not mail at all \xff\xfe");
    env.deliver("b", &super::hostile::many_parts(5_000));
    env.deliver("c", &super::hostile::deep_nesting(200));
    env.deliver("d", &message(9));
    let done = wait_for(Duration::from_secs(60), || {
        env.count(&env.maildir().join("new"), "") == 0 && !env.spool_events().is_empty()
    });
    assert!(done, "{}", env.log());
    assert!(http_get(env.port, "/healthz").is_some_and(|r| r.contains("200 OK")));
    let quarantined: i64 = env
        .db()
        .query_row(
            "SELECT count(*) FROM inbox WHERE status = 'quarantined'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let stored: i64 = env
        .db()
        .query_row("SELECT count(*) FROM inbox", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, 4, "{}", env.log());
    assert!(quarantined >= 1, "{}", env.log());
    stop(&env, child);
}

#[test]
fn reloads_while_mail_flows_lose_nothing_and_store_nothing_twice() {
    let env = Env::new("", "");
    let child = env.start();
    assert!(wait_for(Duration::from_secs(20), || env
        .log()
        .contains("phananh is running")));
    let maildir = env.maildir();
    let sender = std::thread::spawn(move || {
        for n in 0..300 {
            let tmp = maildir.join("tmp").join(format!("f{n}"));
            std::fs::write(&tmp, message(n)).unwrap();
            std::fs::rename(&tmp, maildir.join("new").join(format!("f{n}"))).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    // Channels added, changed (the `mail` channel itself) and removed under the stream.
    let mail = std::fs::read_to_string(env.path("channels/mail.toml")).unwrap();
    for round in 0..3 {
        std::fs::write(
            env.path("channels/extra.toml"),
            "kind = \"maildir\"\npath = \"../Extra\"\n",
        )
        .unwrap();
        std::fs::write(
            env.path("channels/mail.toml"),
            format!("{mail}\nconcurrency = {}\n", 4 + round),
        )
        .unwrap();
        signal(&child, libc::SIGHUP);
        std::thread::sleep(Duration::from_millis(300));
        std::fs::remove_file(env.path("channels/extra.toml")).unwrap();
        signal(&child, libc::SIGHUP);
        std::thread::sleep(Duration::from_millis(300));
    }
    sender.join().unwrap();
    assert!(
        wait_for(Duration::from_secs(60), || env.spool_events().len() == 300
            && env.count(&env.maildir().join("new"), "") == 0),
        "{} events\n{}",
        env.spool_events().len(),
        env.log()
    );
    let db = env.db();
    let (items, reports): (i64, i64) = db
        .query_row(
            "SELECT (SELECT count(*) FROM inbox), (SELECT count(*) FROM reports)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((items, reports), (300, 300), "each message stored once");
    assert_eq!(env.count(&env.maildir().join("cur"), ""), 300);
    stop(&env, child);
}
