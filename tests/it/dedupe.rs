//! The same incident across reporters and channels, places and routing, through the real
//! enrichment and store: what the operations centre receives.

use phananh::config::Config;
use phananh::pipeline::Draft;
use phananh::pipeline::enrich::Enricher;
use phananh::report::{Location, LocationSource};
use phananh::store::{Outcome, Store, StoreSettings, Submission, SubmissionBody};
use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

struct City {
    _dir: tempfile::TempDir,
    config: Config,
    store: Store,
    enricher: Enricher,
}

/// The shipped categories and Huế geography, a made-up polygon for ward 19999 around the
/// centre of Huế, and a route sending urban-order reports there to that ward's committee.
fn city() -> City {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("categories.toml"),
        std::fs::read_to_string(format!("{ROOT}/config/categories.toml")).unwrap()
            + "\n[[routes]]\ncategory = \"trat_tu_do_thi\"\nward = \"19999\"\nunit = \"ubnd_phuong_trung_tam\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("wards.toml"),
        std::fs::read_to_string(format!("{ROOT}/config/hue/wards.toml")).unwrap()
            + "\n[[wards]]\ncode = \"19999\"\nname = \"Trung Tâm Thử\"\nkind = \"phuong\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("wards.geojson"),
        r#"{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"code":"19999"},
           "geometry":{"type":"Polygon","coordinates":[[[107.57,16.46],[107.60,16.46],[107.60,16.48],[107.57,16.48],[107.57,16.46]]]}}]}"#,
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("channels")).unwrap();
    let conf = dir.path().join("phananh.toml");
    std::fs::write(
        &conf,
        format!(
            r#"state_dir = "state"
categories_file = "categories.toml"
[place]
boundary_file = "{ROOT}/config/hue/boundary.geojson"
wards_file = "wards.toml"
ward_polygons_file = "wards.geojson"
"#
        ),
    )
    .unwrap();
    let config = phananh::config::load(&conf).unwrap();
    let store = Store::open(StoreSettings::from_config(&config)).unwrap();
    let enricher = Enricher::new(&config.daemon);
    City {
        _dir: dir,
        config,
        store,
        enricher,
    }
}

struct Said<'a> {
    who: &'a str,
    text: &'a str,
    at: &'a str,
    at_pos: Option<(f64, f64)>,
}

fn said<'a>(who: &'a str, text: &'a str, at: &'a str, at_pos: Option<(f64, f64)>) -> Said<'a> {
    Said {
        who,
        text,
        at,
        at_pos,
    }
}

impl City {
    fn draft(&self, s: &Said<'_>, id: &str) -> Draft {
        let mut d = Draft {
            location: s
                .at_pos
                .map(|(lat, lon)| Location::new(lat, lon, LocationSource::Device)),
            ..Draft::from_text(id, s.who, s.text, "chua_phan_loai")
        };
        self.enricher.apply(&mut d);
        d.text_key = d.dedupe_key();
        d
    }

    async fn submit(&self, channel: &str, kind: &str, s: Said<'_>, id: &str) -> Outcome {
        self.submit_citing(channel, kind, s, id, &[]).await
    }

    async fn submit_citing(
        &self,
        channel: &str,
        kind: &str,
        s: Said<'_>,
        id: &str,
        cites: &[String],
    ) -> Outcome {
        let mut draft = self.draft(&s, id);
        draft.cites = cites.to_vec();
        let raw = format!("{id}:{}", s.text).into_bytes();
        self.store
            .submit(Submission {
                channel: channel.into(),
                kind: kind.into(),
                raw_sha256: phananh::pipeline::sha256_hex(&raw),
                raw,
                source_ref: None,
                received_at: chrono::DateTime::parse_from_rfc3339(s.at).unwrap(),
                body: SubmissionBody::Report(Box::new(draft)),
                acknowledge: false,
            })
            .await
            .unwrap()
            .outcome
    }

    fn event(&self, tracking_code: &str) -> serde_json::Value {
        let conn = self.store.reader().unwrap();
        let json: String = conn
            .query_row(
                "SELECT event_json FROM reports WHERE tracking_code = ?1",
                [tracking_code],
                |r| r.get(0),
            )
            .unwrap();
        serde_json::from_str(&json).unwrap()
    }

    fn forwarded(&self, event_type: &str) -> i64 {
        let conn = self.store.reader().unwrap();
        conn.query_row(
            "SELECT count(*) FROM outbox WHERE event_type = ?1",
            [event_type],
            |r| r.get(0),
        )
        .unwrap()
    }
}

fn code(o: &Outcome) -> String {
    match o {
        Outcome::Created { report } | Outcome::Duplicate { report, .. } => {
            report.tracking_code.clone()
        }
        other => panic!("not a report: {other:?}"),
    }
}

const QUOC_HOC: (f64, f64) = (16.4637, 107.5909);
/// 40 m north of QUOC_HOC.
const QUOC_HOC_40M: (f64, f64) = (16.46406, 107.5909);

#[tokio::test]
async fn another_citizen_describing_the_same_pothole_is_linked_and_forwarded_as_a_duplicate() {
    let c = city();
    let first = c
        .submit(
            "mail",
            "imap",
            said("an", "Kính gửi trung tâm, đường Lê Lợi trước trường Quốc Học có ổ gà rất sâu, xe máy ngã mấy lần rồi", "2026-11-20T07:00:00+07:00", Some(QUOC_HOC)),
            "m1",
        )
        .await;
    let second = c
        .submit(
            "app",
            "feed",
            said(
                "binh",
                "o ga to tren duong le loi gan quoc hoc, nguy hiem lam ad oi",
                "2026-11-21T09:30:00+07:00",
                Some(QUOC_HOC_40M),
            ),
            "a1",
        )
        .await;
    let Outcome::Duplicate { of, .. } = &second else {
        panic!("{second:?}")
    };
    assert_eq!(of.tracking_code, code(&first));
    let event = c.event(&code(&second));
    assert_eq!(event["event"], "report.duplicate");
    assert_eq!(event["related"][0]["reason"], "nearby_similar");
    assert_eq!(event["related"][0]["tracking_code"], code(&first));
    // Stored, linked and forwarded for the centre to merge: nothing dropped.
    assert_eq!(c.forwarded("report.created"), 1);
    assert_eq!(c.forwarded("report.duplicate"), 1);
}

#[tokio::test]
async fn different_problems_at_the_same_corner_are_different_incidents() {
    let c = city();
    let pothole = c
        .submit(
            "mail",
            "imap",
            said(
                "an",
                "Ổ gà lớn trên đường Lê Lợi trước trường Quốc Học",
                "2026-11-20T07:00:00+07:00",
                Some(QUOC_HOC),
            ),
            "m1",
        )
        .await;
    let light = c
        .submit(
            "app",
            "feed",
            said(
                "binh",
                "Đèn đường trước trường Quốc Học trên đường Lê Lợi bị hỏng, tối om",
                "2026-11-20T20:00:00+07:00",
                Some(QUOC_HOC_40M),
            ),
            "a1",
        )
        .await;
    assert!(matches!(light, Outcome::Created { .. }), "{light:?}");
    assert_ne!(code(&pothole), code(&light));
    // The same pothole reported a week later is a new incident (outside the 72 h window).
    let later = c
        .submit(
            "app",
            "feed",
            said(
                "cuong",
                "Ổ gà lớn trên đường Lê Lợi trước trường Quốc Học vẫn chưa vá",
                "2026-11-27T07:00:00+07:00",
                Some(QUOC_HOC),
            ),
            "a2",
        )
        .await;
    assert!(matches!(later, Outcome::Created { .. }), "{later:?}");
    // The same words 600 m away: another pothole.
    let far = c
        .submit(
            "app",
            "feed",
            said(
                "dung",
                "Ổ gà lớn trên đường Lê Lợi trước trường Quốc Học",
                "2026-11-20T09:00:00+07:00",
                Some((16.4691, 107.5909)),
            ),
            "a3",
        )
        .await;
    assert!(matches!(far, Outcome::Created { .. }), "{far:?}");
    assert_eq!(c.forwarded("report.duplicate"), 0);
}

#[tokio::test]
async fn without_positions_different_kiệt_numbers_are_different_places() {
    let c = city();
    c.submit(
        "fb",
        "facebook",
        said(
            "an",
            "Rác ùn ứ đầu kiệt 45 Nguyễn Huệ mấy ngày chưa ai thu gom",
            "2026-11-20T07:00:00+07:00",
            None,
        ),
        "f1",
    )
    .await;
    let other = c
        .submit(
            "fb",
            "facebook",
            said(
                "binh",
                "Rác ùn ứ đầu kiệt 112 Nguyễn Huệ mấy ngày chưa ai thu gom",
                "2026-11-20T08:00:00+07:00",
                None,
            ),
            "f2",
        )
        .await;
    assert!(matches!(other, Outcome::Created { .. }), "{other:?}");
    let same = c
        .submit(
            "fb",
            "facebook",
            said(
                "cuong",
                "kiet 45 nguyen hue rac chat dong chua thu gom, hoi qua",
                "2026-11-20T09:00:00+07:00",
                None,
            ),
            "f3",
        )
        .await;
    assert!(matches!(same, Outcome::Duplicate { .. }), "{same:?}");
    assert_eq!(
        c.event(&code(&same))["related"][0]["reason"],
        "similar_text"
    );
}

#[tokio::test]
async fn the_same_email_in_two_mailboxes_is_one_report() {
    let c = city();
    let s = || {
        said(
            "an",
            "Cây đổ chắn ngang đường Hùng Vương",
            "2026-11-20T07:00:00+07:00",
            None,
        )
    };
    let first = c
        .submit("mail-centre", "imap", s(), "<abc@mail.example>")
        .await;
    let second = c
        .submit("mail-hotline", "imap", s(), "<abc@mail.example>")
        .await;
    let Outcome::Duplicate { of, .. } = &second else {
        panic!("{second:?}")
    };
    assert_eq!(of.tracking_code, code(&first));
    assert_eq!(
        c.event(&code(&second))["related"][0]["reason"],
        "same_message"
    );
    // The reporter repeating themselves is recorded, not sent again.
    assert_eq!(c.forwarded("report.duplicate"), 0);
}

#[tokio::test]
async fn place_ward_and_unit() {
    let c = city();
    // A position in the ward polygon: its ward, and the route for urban order there.
    let inside = c
        .submit(
            "app",
            "feed",
            said(
                "an",
                "Lấn chiếm vỉa hè, buôn bán tràn ra lòng đường",
                "2026-11-20T07:00:00+07:00",
                Some(QUOC_HOC),
            ),
            "a1",
        )
        .await;
    let e = c.event(&code(&inside));
    assert_eq!(e["ward"]["code"], "19999");
    assert_eq!(e["ward"]["source"], "polygon");
    assert_eq!(e["location"]["ward"], "Trung Tâm Thử");
    assert_eq!(e["category"]["code"], "trat_tu_do_thi");
    assert_eq!(e["unit"], "ubnd_phuong_trung_tam");
    assert!(e["location"].get("outside_city").is_none(), "{e}");
    // No position; an old ward name in the text (Phú Hội is in Thuận Hóa since July 2025).
    let old_name = c
        .submit(
            "fb",
            "facebook",
            said(
                "binh",
                "Ngập sâu ở phường Phú Hội sau mưa lớn",
                "2026-11-20T08:00:00+07:00",
                None,
            ),
            "f1",
        )
        .await;
    let e = c.event(&code(&old_name));
    assert_eq!(e["ward"]["name"], "Thuận Hóa");
    assert_eq!(e["ward"]["source"], "text");
    assert_eq!(e["unit"], "so_xay_dung");
    // A map link in the text gives the position; Đà Nẵng is outside the city: flagged.
    let outside = c
        .submit(
            "fb",
            "facebook",
            said(
                "cuong",
                "ổ gà ở đây https://maps.google.com/?q=16.0544,108.2022",
                "2026-11-20T09:00:00+07:00",
                None,
            ),
            "f2",
        )
        .await;
    let e = c.event(&code(&outside));
    assert_eq!(e["location"]["source"], "text");
    assert_eq!(e["location"]["outside_city"], true);
    assert!(e.get("ward").is_none(), "{e}");
    assert!(c.config.daemon.place.boundary_file.is_some());
}

#[tokio::test]
async fn a_second_reporter_repeating_their_duplicate_is_not_forwarded_again() {
    let c = city();
    let first = c
        .submit(
            "mail",
            "imap",
            said(
                "an",
                "Ổ gà sâu trên đường Lê Lợi trước trường Quốc Học",
                "2026-11-20T07:00:00+07:00",
                Some(QUOC_HOC),
            ),
            "m1",
        )
        .await;
    let again = || {
        said(
            "binh",
            "o ga to tren duong le loi gan quoc hoc, nguy hiem",
            "2026-11-20T09:00:00+07:00",
            Some(QUOC_HOC_40M),
        )
    };
    let second = c.submit("app", "feed", again(), "a1").await;
    let third = c.submit("app", "feed", again(), "a2").await;
    for o in [&second, &third] {
        let Outcome::Duplicate { of, .. } = o else {
            panic!("{o:?}")
        };
        assert_eq!(of.tracking_code, code(&first));
    }
    // Binh's second message is stored and linked, but the centre hears of Binh once.
    assert_eq!(c.forwarded("report.duplicate"), 1);
}

#[tokio::test]
async fn a_follow_up_sent_to_two_mailboxes_joins_its_report_once() {
    let c = city();
    let first = c
        .submit(
            "mail-centre",
            "imap",
            said(
                "an",
                "Cây đổ chắn ngang đường Hùng Vương",
                "2026-11-20T07:00:00+07:00",
                None,
            ),
            "<a@mail.example>",
        )
        .await;
    let cites = [code(&first)];
    let reply = || {
        said(
            "an",
            "Cây vẫn chưa được dọn, thêm ảnh",
            "2026-11-20T10:00:00+07:00",
            None,
        )
    };
    let one = c
        .submit_citing("mail-centre", "imap", reply(), "<b@mail.example>", &cites)
        .await;
    let two = c
        .submit_citing("mail-hotline", "imap", reply(), "<b@mail.example>", &cites)
        .await;
    assert!(matches!(one, Outcome::FollowUp { .. }), "{one:?}");
    assert!(matches!(two, Outcome::FollowUp { .. }), "{two:?}");
    assert_eq!(c.forwarded("report.updated"), 1);
    // Someone else reusing that Message-ID in another mailbox is not "the same message".
    let other = c
        .submit(
            "mail-other",
            "imap",
            said(
                "cuong",
                "Mất điện cả khu phố Kim Long từ tối qua",
                "2026-11-20T11:00:00+07:00",
                None,
            ),
            "<a@mail.example>",
        )
        .await;
    assert!(matches!(other, Outcome::Created { .. }), "{other:?}");
}

#[test]
fn check_names_a_broken_geography_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.geojson"), "{\"type\": \"Feature\"}").unwrap();
    std::fs::write(
        dir.path().join("phananh.toml"),
        "state_dir = \"state\"\n[place]\nboundary_file = \"bad.geojson\"\nwards_file = \"missing.toml\"\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("channels")).unwrap();
    let errors = phananh::config::load(&dir.path().join("phananh.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        errors.contains("bad.geojson: a Feature without \"geometry\""),
        "{errors}"
    );
    assert!(
        errors.contains("cannot read") && errors.contains("missing.toml"),
        "{errors}"
    );
}

#[test]
fn the_evaluation_set_meets_the_targets() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_phananh"))
        .args(["dedupe-eval", "--config"])
        .arg(Path::new(ROOT).join("config/quickstart.toml"))
        .arg(Path::new(ROOT).join("fixtures/dedupe"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("cross_reporter"))
        .unwrap_or_else(|| panic!("{stdout}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    let precision: f64 = cols[6].parse().unwrap();
    let recall: f64 = cols[7].parse().unwrap();
    assert!(cols[1].parse::<usize>().unwrap() >= 150, "{stdout}");
    assert!(precision >= 0.95 && recall >= 0.85, "{stdout}");
}
