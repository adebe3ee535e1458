//! The feed channel against a local server speaking Open311 GeoReport v2: paging, overlapping
//! windows, updates, bad items and pages, throttling and failures, restarts mid-paging.

use super::common::{Env, http_get, wait_for};
use super::http_stub::{Answer, Stub};
use std::time::Duration;

const PATH: &str = "/open311/v2/requests.json";

fn page(name: &str) -> Answer {
    Answer::ok(
        "application/json",
        std::fs::read(format!(
            "{}/fixtures/feeds/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
}

fn empty() -> Answer {
    Answer::ok("application/json", b"[]".to_vec())
}

fn status(code: u16, headers: &[(&str, &str)]) -> Answer {
    Answer {
        status: code,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: b"{}".to_vec(),
    }
}

/// An installation with one Open311 feed `portal` polling `server` every second, pages of 2.
fn env(server: &Stub, extra: &str) -> Env {
    let env = Env::new("", "");
    std::fs::remove_file(env.path("channels/mail.toml")).unwrap();
    std::fs::write(
        env.path("channels/portal.toml"),
        format!(
            "kind = \"feed\"\nformat = \"open311\"\nurl = \"{}\"\npoll_interval = \"1s\"\n{}\n\
             [service_codes]\n\"001\" = \"ha_tang_do_thi\"\n",
            server.url(PATH),
            if extra.contains("page_size") {
                extra.to_string()
            } else {
                format!("page_size = 2\n{extra}")
            }
        ),
    )
    .unwrap();
    env
}

fn count(env: &Env, sql: &str) -> i64 {
    if !env.path("state/phananh.db").exists() {
        return 0;
    }
    env.db().query_row(sql, [], |r| r.get(0)).unwrap_or(0)
}

fn asked(server: &Stub) -> Vec<String> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.path == PATH)
        .map(|r| r.target)
        .collect()
}

#[test]
fn three_pages_then_the_same_items_again_store_each_once() {
    let server = Stub::start();
    server.sequence(
        PATH,
        vec![
            page("open311-page1.json"),
            page("open311-page2.json"),
            page("open311-page3.json"),
            // The next window overlaps the last: the server sends the same requests again.
            page("open311-page1.json"),
            page("open311-page2.json"),
            page("open311-page3.json"),
            empty(),
        ],
    );
    let env = env(&server, "");
    let _d = env.start();
    assert!(
        wait_for(Duration::from_secs(20), || env.spool_events().len() == 5),
        "{}",
        env.log()
    );
    assert!(
        wait_for(Duration::from_secs(20), || asked(&server).len() >= 7),
        "{:?}",
        asked(&server)
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(env.spool_events().len(), 5, "repeats are not new reports");
    assert_eq!(count(&env, "SELECT count(*) FROM inbox"), 5);
    let q = asked(&server);
    assert!(
        q[0].contains("start_date=") && q[0].contains("%2B07%3A00"),
        "{q:?}"
    );
    assert!(
        q[0].contains("page=1&page_size=2") && q[2].contains("page=3"),
        "{q:?}"
    );
    let events = env.spool_events();
    let lamp = events
        .iter()
        .find(|e| e["external_id"] == "open311:638341")
        .unwrap();
    assert_eq!(
        lamp["title"],
        "Đèn đường hỏng trên đường Lê Lợi, đoạn trước số 12"
    );
    assert_eq!(lamp["category"]["code"], "ha_tang_do_thi");
    assert_eq!(lamp["category"]["source"], "channel");
    assert_eq!(lamp["location"]["source"], "feed");
    assert_eq!(lamp["submitted_at"], "2026-11-26T08:01:00+07:00");
    // Missing optional fields: no position, so the address is kept in the text.
    let flood = events
        .iter()
        .find(|e| e["external_id"] == "open311:638345")
        .unwrap();
    assert!(flood["location"].is_null());
    assert!(
        flood["description"]
            .as_str()
            .unwrap()
            .contains("Địa chỉ: Lê Lợi")
    );
    let schema = super::schema::validator();
    for e in &events {
        assert_eq!(super::schema::violations(&schema, e), Vec::<String>::new());
    }
}

#[test]
fn a_request_closed_later_updates_its_report() {
    let server = Stub::start();
    server.sequence(
        PATH,
        vec![
            page("open311-page1.json"),
            empty(),
            page("open311-updated.json"),
            empty(),
            // A lagging replica serves an older version, never seen: it must not undo the update.
            Answer::ok(
                "application/json",
                String::from_utf8(page("open311-updated.json").body)
                    .unwrap()
                    .replace("2026-11-27T10:30:00+07:00", "2026-11-27T09:00:00+07:00")
                    .replace("\"closed\"", "\"open\"")
                    .into_bytes(),
            ),
            empty(),
        ],
    );
    let env = env(&server, "");
    let _d = env.start();
    assert!(
        wait_for(Duration::from_secs(20), || env.spool_events().len() == 3),
        "{}",
        env.log()
    );
    let events = env.spool_events();
    let update = events
        .iter()
        .find(|e| e["event"] == "report.updated")
        .expect("an update");
    assert_eq!(update["external_id"], "open311:638341");
    assert!(
        update["update"]["description"]
            .as_str()
            .unwrap()
            .contains("Trạng thái (closed): Đã thay bóng đèn mới"),
        "{update}"
    );
    assert_eq!(count(&env, "SELECT count(*) FROM reports"), 2);
    assert!(
        wait_for(Duration::from_secs(20), || count(
            &env,
            "SELECT count(*) FROM inbox WHERE automated = 'stale_version'"
        ) == 1),
        "{}",
        env.log()
    );
    assert_eq!(
        env.spool_events().len(),
        3,
        "the old version changes nothing"
    );
}

#[test]
fn a_bad_item_is_quarantined_and_a_broken_page_is_asked_again() {
    let server = Stub::start();
    server.sequence(
        PATH,
        vec![
            page("open311-truncated.json"),
            page("open311-malformed-item.json"),
            empty(),
        ],
    );
    let env = env(&server, "page_size = 0");
    let _d = env.start();
    assert!(
        wait_for(Duration::from_secs(30), || env.spool_events().len() == 2),
        "{}",
        env.log()
    );
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM inbox WHERE status = 'quarantined'"
        ),
        1
    );
    let reason: String = env
        .db()
        .query_row(
            "SELECT reason FROM inbox WHERE status = 'quarantined'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(reason.contains("time zone"), "{reason}");
    assert!(env.log().contains("asked again"), "{}", env.log());
}

#[test]
fn throttling_and_server_errors_are_waited_out() {
    let server = Stub::start();
    server.sequence(
        PATH,
        vec![
            status(429, &[("Retry-After", "1")]),
            status(500, &[]),
            status(503, &[("Retry-After", "1")]),
            page("open311-page3.json"),
            empty(),
        ],
    );
    let env = env(&server, "");
    let _d = env.start();
    assert!(
        wait_for(Duration::from_secs(30), || env.spool_events().len() == 1),
        "{}",
        env.log()
    );
    assert!(asked(&server).len() >= 4);
}

#[test]
fn refused_credentials_wait_for_the_operator() {
    let server = Stub::start();
    server.sequence(PATH, vec![status(401, &[])]);
    let env = env(&server, "");
    std::fs::write(env.path("auth.header"), "Authorization: Bearer sai\n").unwrap();
    let text = std::fs::read_to_string(env.path("channels/portal.toml")).unwrap();
    std::fs::write(
        env.path("channels/portal.toml"),
        text.replace(
            "[service_codes]",
            "auth_header_file = \"../auth.header\"\n[service_codes]",
        ),
    )
    .unwrap();
    let _d = env.start();
    assert!(
        wait_for(Duration::from_secs(20), || http_get(env.port, "/readyz")
            .is_some_and(
                |r| r.starts_with("HTTP/1.1 503") && r.contains("needs_operator")
            )),
        "{}",
        env.log()
    );
    assert!(!env.log().contains("Bearer sai"));
}

#[test]
fn a_restart_mid_paging_resumes_at_the_next_page() {
    let server = Stub::start();
    // Page 2 keeps failing: the round gives up after page 1 was stored.
    server.sequence(PATH, vec![page("open311-page1.json"), status(500, &[])]);
    let env = env(&server, "");
    let d = env.start();
    assert!(
        wait_for(Duration::from_secs(20), || count(
            &env,
            "SELECT count(*) FROM feed_cursors WHERE next_page = 2"
        ) == 1),
        "{}",
        env.log()
    );
    assert_eq!(count(&env, "SELECT count(*) FROM inbox"), 2);
    drop(d);
    server.sequence(
        PATH,
        vec![
            page("open311-page2.json"),
            page("open311-page3.json"),
            empty(),
        ],
    );
    let before = asked(&server).len();
    let _d = env.start();
    assert!(
        wait_for(Duration::from_secs(20), || env.spool_events().len() == 5),
        "{}",
        env.log()
    );
    let after = asked(&server);
    assert!(
        after[before].contains("page=2"),
        "resumed at page 2: {:?}",
        &after[before..]
    );
}

#[test]
fn a_photo_on_a_forbidden_host_is_refused_and_recorded() {
    let server = Stub::start();
    server.sequence(PATH, vec![page("open311-forbidden-media.json"), empty()]);
    let env = env(&server, "media_hosts = [\"portal.hue.example.vn\"]");
    let _d = env.start();
    assert!(
        wait_for(Duration::from_secs(20), || env.spool_events().len() == 1),
        "{}",
        env.log()
    );
    let r = &env.spool_events()[0];
    assert_eq!(r["media"].as_array().unwrap().len(), 0);
    assert_eq!(r["omitted_media"][0]["reason"], "not_allowed");
}

const APP: &str = "/api/v1/reports";

fn app_env(server: &Stub, pointer_items: &str) -> Env {
    app_env_with(
        server,
        pointer_items,
        "cursor = \"/paging/next_cursor\"\ncursor_param = \"cursor\"",
    )
}

fn app_env_with(server: &Stub, pointer_items: &str, paging: &str) -> Env {
    let env = Env::new("", "");
    std::fs::remove_file(env.path("channels/mail.toml")).unwrap();
    std::fs::write(
        env.path("channels/app.toml"),
        format!(
            r#"kind = "feed"
format = "json"
url = "{}"
poll_interval = "1s"
[json]
items = "{pointer_items}"
id = "/id"
created = "/created_at"
title = "/title"
description = "/content/text"
category = "/category/code"
latitude = "/location/lat"
longitude = "/location/lng"
address = "/location/address"
reporter_name = "/user/full_name"
phone = "/user/phone"
app_user_id = "/user/id"
media = "/attachments"
media_url = "/url"
{paging}
since_param = "since"
[json.categories]
"road" = "ha_tang_do_thi"
"#,
            server.url(APP)
        ),
    )
    .unwrap();
    env
}

#[test]
fn an_app_feed_is_read_through_its_mapping_with_a_cursor_and_since() {
    let server = Stub::start();
    server.sequence(
        APP,
        vec![page("app-page1.json"), page("app-page2.json"), empty()],
    );
    let env = app_env(&server, "/data/items");
    let _d = env.start();
    assert!(
        wait_for(Duration::from_secs(20), || env.spool_events().len() == 3),
        "{}",
        env.log()
    );
    assert!(
        wait_for(Duration::from_secs(20), || server
            .requests()
            .iter()
            .filter(|r| r.path == APP)
            .count()
            >= 3),
        "{}",
        env.log()
    );
    let reqs: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.path == APP)
        .collect();
    assert!(reqs[1].target.contains("cursor=c2"), "{:?}", reqs[1].target);
    // The next round asks from the newest item seen, less the overlap (an hour by default):
    // items created earlier can become visible later.
    assert!(
        reqs[2]
            .target
            .contains("since=2026-11-26T09%3A05%3A00%2B07%3A00"),
        "{:?}",
        reqs[2].target
    );
    let events = env.spool_events();
    let pothole = events
        .iter()
        .find(|e| e["external_id"] == "json:9001")
        .unwrap();
    assert_eq!(pothole["title"], "Ổ gà trên đường Lê Lợi");
    assert_eq!(pothole["category"]["code"], "ha_tang_do_thi");
    assert_eq!(pothole["reporter"]["phone"], "+84914222333");
    assert_eq!(pothole["reporter"]["app_user_id"], "u-1");
    assert_eq!(pothole["reporter"]["name"], "Nguyễn Văn An");
    assert_eq!(pothole["submitted_at"], "2026-11-26T08:15:00+07:00");
    let schema = super::schema::validator();
    for e in &events {
        assert_eq!(super::schema::violations(&schema, e), Vec::<String>::new());
    }
    assert!(!env.log().contains("Nguyễn Văn An") && !env.log().contains("0914"));
}

#[test]
fn check_catches_a_wrong_pointer_in_a_mapping() {
    let server = Stub::start();
    let env = app_env(&server, "data/items");
    let out = env.cli(&["check"]);
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("app.toml:6:1: items = \"data/items\" is not a JSON pointer"),
        "{text}"
    );
}

#[test]
fn a_response_over_the_size_limit_is_cut_off_and_nothing_moves() {
    let server = Stub::start();
    let mut huge = b"[".to_vec();
    huge.extend(std::iter::repeat_n(b' ', 64 * 1024));
    huge.extend(b"]");
    server.sequence(PATH, vec![Answer::ok("application/json", huge)]);
    let env = env(&server, "max_response_size = \"16KiB\"");
    let _d = env.start();
    assert!(
        wait_for(Duration::from_secs(30), || env
            .log()
            .contains("max_response_size")),
        "{}",
        env.log()
    );
    assert_eq!(count(&env, "SELECT count(*) FROM feed_cursors"), 0);
    assert_eq!(count(&env, "SELECT count(*) FROM inbox"), 0);
}

#[test]
fn an_unchanged_feed_costs_a_304() {
    let server = Stub::start();
    let mut first = page("app-page2.json");
    first.headers.push(("ETag".into(), "\"v1\"".into()));
    server.sequence(APP, vec![first, status(304, &[]), empty()]);
    // One URL is the whole feed (no paging, no since): the ETag is worth sending back.
    let env = app_env_with(&server, "/data/items", "");
    let text = std::fs::read_to_string(env.path("channels/app.toml")).unwrap();
    std::fs::write(
        env.path("channels/app.toml"),
        text.replace("since_param = \"since\"\n", ""),
    )
    .unwrap();
    let _d = env.start();
    assert!(
        wait_for(Duration::from_secs(20), || server
            .requests()
            .iter()
            .filter(|r| r.path == APP)
            .count()
            >= 2),
        "{}",
        env.log()
    );
    let reqs: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.path == APP)
        .collect();
    assert_eq!(reqs[1].target, reqs[0].target);
    assert!(
        reqs[1]
            .headers
            .iter()
            .any(|(k, v)| k == "if-none-match" && v == "\"v1\""),
        "{:?}",
        reqs[1].headers
    );
    assert!(wait_for(Duration::from_secs(10), || env
        .spool_events()
        .len()
        == 1));
}

#[test]
fn a_server_that_ignores_paging_is_noticed_and_not_asked_forever() {
    let server = Stub::start();
    // Every page is the same answer.
    server.sequence(PATH, vec![page("open311-page1.json")]);
    let env = env(&server, "");
    let _d = env.start();
    assert!(
        wait_for(Duration::from_secs(20), || env
            .log()
            .contains("seems to ignore page/page_size")),
        "{}",
        env.log()
    );
    assert_eq!(count(&env, "SELECT count(*) FROM inbox"), 2);
    let asked_once = asked(&server).len();
    assert!(asked_once <= 4, "{asked_once} requests in the first rounds");
}

#[test]
fn a_redirect_to_another_host_is_not_followed() {
    let server = Stub::start();
    let elsewhere = Stub::start();
    elsewhere.answer(PATH, page("open311-page1.json"));
    server.sequence(
        PATH,
        vec![Answer::redirect(&format!(
            "http://localhost:{}{PATH}",
            elsewhere.port
        ))],
    );
    let env = env(&server, "auth_header_file = \"../auth.header\"");
    std::fs::write(env.path("auth.header"), "X-Api-Key: bi-mat\n").unwrap();
    let _d = env.start();
    assert!(
        wait_for(Duration::from_secs(20), || env.log().contains("HTTP 302")),
        "{}",
        env.log()
    );
    assert!(
        elsewhere.requests().is_empty(),
        "the key never left the feed's host"
    );
    assert_eq!(count(&env, "SELECT count(*) FROM inbox"), 0);
}

#[test]
fn items_quarantined_by_a_wrong_mapping_are_taken_after_the_fix() {
    let server = Stub::start();
    server.sequence(
        APP,
        vec![page("app-page1.json"), page("app-page2.json"), empty()],
    );
    let env = app_env(&server, "/data/items");
    let file = env.path("channels/app.toml");
    let good = std::fs::read_to_string(&file).unwrap();
    // A valid pointer to the wrong place: every item is quarantined ("no created time").
    std::fs::write(
        &file,
        good.replace("created = \"/created_at\"", "created = \"/created\""),
    )
    .unwrap();
    let d = env.start();
    assert!(
        wait_for(Duration::from_secs(20), || count(
            &env,
            "SELECT count(*) FROM inbox WHERE status = 'quarantined'"
        ) == 3),
        "{}",
        env.log()
    );
    drop(d);
    std::fs::write(&file, good).unwrap();
    let out = env.cli_ok(&["quarantine", "retry", "--all"]);
    assert_eq!(out.matches("new report").count(), 3, "{out}");
    assert_eq!(count(&env, "SELECT count(*) FROM reports"), 3);
    let keys: i64 = count(
        &env,
        "SELECT count(*) FROM inbox WHERE external_id = 'json:9001@2026-11-26 08:15:00'",
    );
    assert_eq!(
        keys, 1,
        "stored under the item's own key, so the feed's repeat is recognised"
    );
}
