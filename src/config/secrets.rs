//! Secrets are referenced from config, never written in it: `NAME_file` (a path) or `NAME_env`
//! (an environment variable). This module refuses inline secrets and resolves references.

use super::error::ConfigError;
use std::path::{Path, PathBuf};

/// Key names that hold credentials. A key with one of these names (or ending in `_NAME`) that is not
/// a `_file`/`_env` reference is an inline secret.
const SECRET_WORDS: &[&str] = &[
    "password",
    "secret",
    "token",
    "api_key",
    "apikey",
    "passphrase",
];

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    if key.ends_with("_file") || key.ends_with("_env") {
        return false;
    }
    SECRET_WORDS
        .iter()
        .any(|w| key == *w || key.ends_with(&format!("_{w}")))
}

/// Walks a parsed file and reports every inline secret, with how to fix it.
pub fn refuse_inline(path: &Path, text: &str, table: &toml::Table) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    walk(path, text, table, &mut errors);
    errors.sort_by_key(|e| e.position);
    errors
}

fn walk(path: &Path, text: &str, table: &toml::Table, errors: &mut Vec<ConfigError>) {
    for (key, value) in table {
        if is_secret_key(key) {
            errors.push(ConfigError::at_key(
                path,
                text,
                key,
                format!(
                    "`{key}` holds a secret inline, and secrets are never written in config files; \
                     put it in a file only phananh can read (mode 0600) and write \
                     `{key}_file = \"/etc/phananh/secrets/...\"`, or name an environment variable \
                     with `{key}_env = \"VARIABLE\"`"
                ),
            ));
            continue;
        }
        match value {
            toml::Value::Table(t) => walk(path, text, t, errors),
            toml::Value::Array(items) => {
                for item in items {
                    if let toml::Value::Table(t) = item {
                        walk(path, text, t, errors);
                    }
                }
            }
            _ => {}
        }
    }
}

/// A reference to a secret, as written in config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    File(PathBuf),
    Env(String),
}

impl SecretRef {
    /// Reads the secret now. Trailing newlines in files are dropped (editors add them).
    pub fn resolve(&self) -> Result<String, String> {
        match self {
            SecretRef::File(p) => std::fs::read_to_string(p)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
                .map_err(|e| format!("cannot read secret file {}: {e}", p.display())),
            SecretRef::Env(var) => std::env::var(var)
                .map_err(|_| format!("environment variable {var} is not set or not UTF-8")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_secrets_are_refused_with_a_fix() {
        let text = "kind = \"imap\"\npassword = \"hunter2\"\n[auth]\napi_token = \"x\"\npassword_file = \"p\"\n";
        let table: toml::Table = text.parse().unwrap();
        let errs = refuse_inline(Path::new("c.toml"), text, &table);
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].position, Some((2, 1)));
        assert!(errs[0].message.contains("password_file"));
        assert!(errs[1].message.contains("api_token_env"));
    }

    #[test]
    fn file_and_env_references_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, "s3cret\n").unwrap();
        assert_eq!(SecretRef::File(p).resolve().unwrap(), "s3cret");
        assert!(
            SecretRef::Env("PHANANH_TEST_SURELY_UNSET".into())
                .resolve()
                .is_err()
        );
    }
}
