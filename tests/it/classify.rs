//! Categories by the shipped keyword rules, on text as citizens write it, and the unit each one
//! routes to.

use super::common::Env;

fn env() -> Env {
    Env::new(
        &format!(
            "categories_file = \"{}/config/categories.toml\"",
            env!("CARGO_MANIFEST_DIR")
        ),
        "",
    )
}

fn ingest(env: &Env, name: &str, subject: &str, text: &str) -> serde_json::Value {
    let mail = format!(
        "From: Citizen <{name}@example.com>\r\nTo: dttm@hue.example.vn\r\nSubject: {subject}\r\n\
         Message-ID: <{name}@example.com>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
    );
    let path = env.path(&format!("{name}.eml"));
    std::fs::write(&path, mail).unwrap();
    env.cli_ok(&["ingest", "--channel", "mail", path.to_str().unwrap()]);
    env.spool_events()
        .into_iter()
        .find(|e| e["external_id"] == format!("<{name}@example.com>"))
        .unwrap()
}

#[test]
fn reports_get_a_category_and_its_unit_from_folded_text() {
    let env = env();
    // No diacritics, capitals: still a pothole.
    let r = ingest(
        &env,
        "a",
        "O GA duong Le Loi",
        "Co o ga rat lon truoc so 12, xe may te 2 lan.",
    );
    assert_eq!(r["category"]["code"], "ha_tang_do_thi");
    assert_eq!(r["category"]["source"], "rules");
    assert_eq!(r["unit"], "so_xay_dung");
    let r = ingest(
        &env,
        "b",
        "Phản ánh",
        "Quán ăn đầu hẻm bán thức ăn ôi thiu, cả nhà bị ngộ độc.",
    );
    assert_eq!(r["category"]["code"], "an_toan_thuc_pham");
    assert_eq!(r["unit"], "so_y_te");
    let r = ingest(
        &env,
        "c",
        "Góp ý",
        "Cán bộ phường nhũng nhiễu, hạch sách khi làm thủ tục.",
    );
    assert_eq!(r["category"]["code"], "cong_vu");
    // Nothing to go on: the default category and its unit.
    let r = ingest(&env, "d", "Xin chào", "Cảm ơn trung tâm.");
    assert_eq!(r["category"]["code"], "chua_phan_loai");
    assert_eq!(r["category"]["source"], "default");
    assert_eq!(r["unit"], "trung_tam_giam_sat");
}
