//! The city's geography from configuration: its boundary (a GeoJSON polygon), its wards (a
//! gazetteer with the names citizens still use since the 2025 reorganisation) and, when the city
//! has them, ward polygons. Nothing here knows it is Huế.

use super::text;
use serde::Deserialize;

/// Rings of one polygon as (lon, lat) pairs: the first is the outline, the others holes.
type Polygon = Vec<Vec<(f64, f64)>>;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Area {
    polygons: Vec<Polygon>,
}

impl Area {
    /// Reads a GeoJSON FeatureCollection, Feature or bare geometry (Polygon or MultiPolygon);
    /// every polygon found counts.
    pub fn from_geojson(json: &str) -> Result<Area, String> {
        Ok(Area {
            polygons: features(json)?.into_iter().flat_map(|(_, p)| p).collect(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.polygons.is_empty()
    }

    pub fn contains(&self, lat: f64, lon: f64) -> bool {
        self.polygons.iter().any(|p| in_polygon(p, lon, lat))
    }
}

/// Even-odd over all rings, so holes are outside.
fn in_polygon(rings: &Polygon, x: f64, y: f64) -> bool {
    let mut inside = false;
    for ring in rings {
        let n = ring.len();
        let mut j = n.wrapping_sub(1);
        for i in 0..n {
            let (xi, yi) = ring[i];
            let (xj, yj) = ring[j];
            if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
                inside = !inside;
            }
            j = i;
        }
    }
    inside
}

/// (properties, polygons) of each feature with an areal geometry.
fn features(json: &str) -> Result<Vec<(serde_json::Value, Vec<Polygon>)>, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("not GeoJSON: {e}"))?;
    let mut out = Vec::new();
    match v.get("type").and_then(|t| t.as_str()) {
        Some("FeatureCollection") => {
            for f in v
                .get("features")
                .and_then(|f| f.as_array())
                .ok_or("a FeatureCollection without \"features\"")?
            {
                out.push(feature(f)?);
            }
        }
        Some("Feature") => out.push(feature(&v)?),
        Some(_) => out.push((serde_json::Value::Null, geometry(&v)?)),
        None => return Err("no GeoJSON \"type\"".into()),
    }
    out.retain(|(_, p)| !p.is_empty());
    if out.is_empty() {
        return Err("no Polygon or MultiPolygon in it".into());
    }
    Ok(out)
}

fn feature(f: &serde_json::Value) -> Result<(serde_json::Value, Vec<Polygon>), String> {
    let props = f
        .get("properties")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    let geom = f.get("geometry").ok_or("a Feature without \"geometry\"")?;
    Ok((props, geometry(geom)?))
}

fn geometry(g: &serde_json::Value) -> Result<Vec<Polygon>, String> {
    let coords = g.get("coordinates");
    let ring = |r: &serde_json::Value| -> Result<Vec<(f64, f64)>, String> {
        r.as_array()
            .ok_or("a ring that is not a list")?
            .iter()
            .map(|p| match p.as_array().map(|a| a.as_slice()) {
                Some([x, y, ..]) => match (x.as_f64(), y.as_f64()) {
                    (Some(x), Some(y)) => Ok((x, y)),
                    _ => Err("a position that is not two numbers".to_string()),
                },
                _ => Err("a position that is not [lon, lat]".to_string()),
            })
            .collect()
    };
    let polygon = |p: &serde_json::Value| -> Result<Polygon, String> {
        p.as_array()
            .ok_or("a polygon that is not a list of rings")?
            .iter()
            .map(ring)
            .collect()
    };
    match g.get("type").and_then(|t| t.as_str()) {
        Some("Polygon") => Ok(vec![polygon(coords.ok_or("no coordinates")?)?]),
        Some("MultiPolygon") => coords
            .and_then(|c| c.as_array())
            .ok_or("a MultiPolygon without coordinates")?
            .iter()
            .map(polygon)
            .collect(),
        Some("GeometryCollection") => Ok(g
            .get("geometries")
            .and_then(|x| x.as_array())
            .map(|gs| {
                gs.iter()
                    .filter_map(|g| geometry(g).ok())
                    .flatten()
                    .collect()
            })
            .unwrap_or_default()),
        _ => Ok(Vec::new()),
    }
}

/// One entry of the wards file (`[[wards]]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct WardEntry {
    pub code: String,
    pub name: String,
    #[serde(default)]
    pub kind: Option<String>,
    /// Old names merged into it, other spellings.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Old names that also denote another place: not matched alone.
    #[serde(default)]
    pub ambiguous_aliases: Vec<String>,
    /// Old district-level names whose seat it now is.
    #[serde(default)]
    pub old_units: Vec<String>,
    #[serde(default)]
    pub old_districts: Vec<String>,
    #[serde(default)]
    pub centre: Option<[f64; 2]>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct WardsFile {
    wards: Vec<WardEntry>,
}

/// The wards: by name in text, and by position when polygons are given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Wards {
    entries: Vec<WardEntry>,
    /// (name as written lower-case, name folded, index into entries), longest first.
    /// Ambiguous old names have no index: matched, they name no ward, and their words are not
    /// matched again as a shorter name.
    names: Vec<(String, String, Option<usize>)>,
    polygons: Vec<(usize, Polygon)>,
}

/// A ward found for a report, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub code: String,
    pub name: String,
    pub by_polygon: bool,
}

/// NFC, lower case, punctuation as spaces, spaced at both ends; diacritics kept, the tone mark
/// of "oa", "oe" and "uy" on the first vowel (the GSO list writes "Hoá", "Thuỷ"; the resolutions
/// and most people "Hóa", "Thủy").
fn lower(s: &str) -> String {
    let spaced: String = one_tone_style(&s.to_lowercase())
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .flat_map(char::to_lowercase)
        .collect();
    format!(
        " {} ",
        spaced.split_whitespace().collect::<Vec<_>>().join(" ")
    )
}

impl Wards {
    pub fn from_toml(toml_text: &str) -> Result<Wards, String> {
        let file: WardsFile = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        let mut names = Vec::new();
        let mut seen = std::collections::HashMap::new();
        let mut folded_owner: std::collections::HashMap<String, usize> = Default::default();
        for (i, w) in file.wards.iter().enumerate() {
            if w.code.trim().is_empty() || w.name.trim().is_empty() {
                return Err(format!("a ward without code or name (entry {})", i + 1));
            }
            if let Some(other) = seen.insert(w.code.clone(), i) {
                return Err(format!(
                    "ward code {:?} appears twice (entries {} and {})",
                    w.code,
                    other + 1,
                    i + 1
                ));
            }
            let named = std::iter::once(&w.name)
                .chain(&w.aliases)
                .chain(&w.old_units)
                .map(|n| (n, Some(i)));
            for (n, ward) in named.chain(w.ambiguous_aliases.iter().map(|n| (n, None))) {
                let folded = text::dedupe_key(n);
                if folded.chars().count() < 2 {
                    return Err(format!(
                        "ward {:?}: the name {n:?} is too short to look for in text",
                        w.name
                    ));
                }
                if ward.is_some()
                    && let Some(other) = folded_owner.insert(folded.clone(), i)
                    && other != i
                {
                    return Err(format!(
                        "the name {n:?} is given to two wards ({:?} and {:?}); list it under one, or as ambiguous_aliases",
                        file.wards[other].name, w.name
                    ));
                }
                names.push((lower(n), format!(" {folded} "), ward));
            }
        }
        names.sort_by_key(|(e, _, _)| std::cmp::Reverse(e.chars().count()));
        Ok(Wards {
            entries: file.wards,
            names,
            polygons: Vec::new(),
        })
    }

    /// Adds ward polygons: each feature's `properties.code` names a ward of the gazetteer.
    pub fn with_polygons(mut self, geojson: &str) -> Result<Wards, String> {
        for (props, polys) in features(geojson)? {
            let code = props
                .get("code")
                .map(|c| match c {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .ok_or("a ward polygon without properties.code")?;
            let i = self
                .entries
                .iter()
                .position(|w| w.code == code)
                .ok_or_else(|| format!("ward polygon code {code:?} is not in the wards file"))?;
            self.polygons.extend(polys.into_iter().map(|p| (i, p)));
        }
        Ok(self)
    }

    pub fn has(&self, code: &str) -> bool {
        self.entries.iter().any(|w| w.code == code)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn at(&self, lat: f64, lon: f64) -> Option<Found> {
        self.polygons
            .iter()
            .find(|(_, p)| in_polygon(p, lon, lat))
            .map(|(i, _)| self.found(*i, true))
    }

    fn found(&self, i: usize, by_polygon: bool) -> Found {
        Found {
            code: self.entries[i].code.clone(),
            name: self.entries[i].name.clone(),
            by_polygon,
        }
    }

    /// Every ward a text names (current or old names). "Thuận Hòa" (an old ward, now in Phú
    /// Xuân) and "Thuận Hóa" (a new one) differ only by a mark, so a text written with marks is
    /// matched as written; only a text without any is matched folded. A name right after
    /// "đường", "cầu", "chợ", "kiệt"… is a street or a landmark, not the ward.
    pub fn in_text(&self, s: &str) -> Vec<Found> {
        let marked = s.chars().any(|c| c.is_alphabetic() && !c.is_ascii());
        let mut hits = if marked {
            find(
                &lower(s),
                self.names.iter().map(|(e, _, i)| (e, *i)),
                NOT_WARD_AFTER,
            )
        } else {
            find(
                &format!(" {} ", text::dedupe_key(s)),
                self.names.iter().map(|(_, f, i)| (f, *i)),
                NOT_WARD_AFTER_FOLDED,
            )
        };
        hits.sort_unstable();
        hits.dedup();
        hits.into_iter().map(|i| self.found(i, false)).collect()
    }
}

/// Words after which a place name is not a ward.
const NOT_WARD_AFTER: &[&str] = &[
    "đường",
    "cầu",
    "chợ",
    "kiệt",
    "hẻm",
    "trường",
    "sông",
    "bến",
    "đ",
    "ngõ",
    "phố",
    "lăng",
    "đồi",
];
/// The same, folded; "cho" (for, or chợ) and "song" (but, or sông) are left out.
const NOT_WARD_AFTER_FOLDED: &[&str] = &[
    "duong", "cau", "kiet", "hem", "truong", "ben", "d", "ngo", "pho", "lang", "doi",
];

/// Indexes of the names found in `hay` (both spaced at the ends), longest names first, each
/// span matched once.
fn find<'a>(
    hay: &str,
    names: impl Iterator<Item = (&'a String, Option<usize>)>,
    not_after: &[&str],
) -> Vec<usize> {
    let mut hay = hay.to_string();
    let mut hits = Vec::new();
    for (name, i) in names {
        let mut from = 0;
        while let Some(at) = hay[from..].find(name.as_str()).map(|p| p + from) {
            let before = hay[..at].split_whitespace().next_back().unwrap_or("");
            if let Some(i) = i
                && !not_after.contains(&before)
            {
                hits.push(i);
            }
            // The longer name's words are not matched again as a shorter one.
            hay.replace_range(at + 1..at + name.len() - 1, &" ".repeat(name.len() - 2));
            from = at + 1;
        }
    }
    hits
}

/// "hoá" → "hóa", "thuỷ" → "thủy": the two placements of the tone mark in the diphthongs oa,
/// oe and uy, made one. Applied to names and text alike, so only consistency matters.
fn one_tone_style(s: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    const TONES: [char; 5] = ['\u{300}', '\u{301}', '\u{303}', '\u{309}', '\u{323}'];
    let mut out: Vec<char> = s.nfd().collect();
    for i in 2..out.len() {
        if TONES.contains(&out[i])
            && matches!(
                (out[i - 2], out[i - 1]),
                ('o', 'a') | ('o', 'e') | ('u', 'y')
            )
        {
            let tone = out.remove(i);
            out.insert(i - 1, tone);
        }
    }
    out.into_iter().nfc().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hue() -> (Area, Wards) {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/config/hue/");
        let area =
            Area::from_geojson(&std::fs::read_to_string(format!("{dir}boundary.geojson")).unwrap())
                .unwrap();
        let wards = Wards::from_toml(&std::fs::read_to_string(format!("{dir}wards.toml")).unwrap())
            .unwrap();
        (area, wards)
    }

    #[test]
    fn the_shipped_boundary_holds_huế_and_not_its_neighbours() {
        let (area, wards) = hue();
        assert_eq!(wards.len(), 40);
        for (lat, lon) in [
            (16.4698, 107.5786),
            (16.401, 107.703),
            (16.27, 107.24),
            (16.24, 108.07),
        ] {
            assert!(area.contains(lat, lon), "{lat},{lon} should be inside");
        }
        // Đà Nẵng, Đông Hà, Hội An, the sea.
        for (lat, lon) in [
            (16.054, 108.202),
            (16.816, 107.10),
            (15.88, 108.33),
            (16.6, 107.8),
        ] {
            assert!(!area.contains(lat, lon), "{lat},{lon} should be outside");
        }
    }

    #[test]
    fn old_ward_names_find_the_new_ward() {
        let (_, wards) = hue();
        let names = |s: &str| {
            wards
                .in_text(s)
                .into_iter()
                .map(|f| f.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names("ngập nặng ở phường Phú Hội"), vec!["Thuận Hóa"]);
        assert_eq!(names("ngap nang o phuong phu hoi"), vec!["Thuận Hóa"]);
        assert_eq!(names("đường Lê Lợi"), Vec::<String>::new());
        // A street named like a ward is not the ward.
        assert_eq!(names("cây đổ trên đường Kim Long"), Vec::<String>::new());
        assert_eq!(names("mất nước ở Kim Long"), vec!["Kim Long"]);
        assert_eq!(
            names("sạt lở ở xã Chân Mây – Lăng Cô"),
            vec!["Chân Mây - Lăng Cô"]
        );
        // The old Citadel ward Thuận Hòa is not the new Thuận Hóa; written without marks, the
        // folded match cannot tell them apart.
        assert_eq!(names("ngập ở phường Thuận Hòa"), Vec::<String>::new());
        assert_eq!(names("ngập ở phường Thuận Hóa"), vec!["Thuận Hóa"]);
        assert_eq!(names("gui cho Kim Long"), vec!["Kim Long"]);
        // The other tone placement, as the GSO list writes names.
        assert_eq!(names("ngập ở phường Thuận Hoá"), vec!["Thuận Hóa"]);
        assert_eq!(names("cúp nước ở Thuỷ Xuân"), vec!["Thủy Xuân"]);
        assert_eq!(names(""), Vec::<String>::new());
    }

    #[test]
    fn a_gazetteer_with_a_useless_or_shared_name_is_refused() {
        let e = Wards::from_toml("[[wards]]\ncode = \"1\"\nname = \"Một\"\naliases = [\"–\"]\n")
            .unwrap_err();
        assert!(e.contains("too short"), "{e}");
        let e = Wards::from_toml(
            "[[wards]]\ncode = \"1\"\nname = \"Một\"\naliases = [\"Phú Hội\"]\n[[wards]]\ncode = \"2\"\nname = \"Hai\"\naliases = [\"Phu Hoi\"]\n",
        )
        .unwrap_err();
        assert!(e.contains("two wards"), "{e}");
    }

    #[test]
    fn a_polygon_gives_the_ward() {
        let wards = Wards::from_toml(
            "[[wards]]\ncode = \"1\"\nname = \"Một\"\n[[wards]]\ncode = \"2\"\nname = \"Hai\"\n",
        )
        .unwrap()
        .with_polygons(
            r#"{"type":"FeatureCollection","features":[
              {"type":"Feature","properties":{"code":"2"},"geometry":{"type":"Polygon",
               "coordinates":[[[107.0,16.0],[108.0,16.0],[108.0,17.0],[107.0,17.0],[107.0,16.0]]]}}]}"#,
        )
        .unwrap();
        assert_eq!(wards.at(16.5, 107.5).unwrap().code, "2");
        assert!(wards.at(15.5, 107.5).is_none());
    }
}
