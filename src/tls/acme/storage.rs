//! The ACME storage directory: the account's credentials (one file per ACME server, shared by
//! every certificate and every gateway using the directory) and each certificate with its key.
//! Writes go to a temporary file renamed into place, so a reader (another instance, a
//! restart) sees the old file or the new one, never half of one; keys are mode 0600.

use gatehouse_config::tls::Acme;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Creates the directory (mode 0700: it holds private keys) if it is missing.
pub fn ensure_dir(dir: &str) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("{dir}: cannot create the ACME storage directory: {e}"))
}

/// `account-<server>.json`: the server named by its host and port, so a staging and a
/// production directory in one storage keep apart.
pub fn account_file(cfg: &Acme) -> PathBuf {
    let rest = cfg
        .directory
        .split_once("://")
        .map_or(cfg.directory.as_str(), |(_, r)| r);
    let host = rest.split(['/', '?']).next().unwrap_or("");
    Path::new(&cfg.storage).join(format!("account-{}.json", safe(host)))
}

/// `<first domain>-<hash>.crt` and `.key`; the hash is of the directory and the sorted
/// domains, so another set of names (or another CA) is another file.
pub fn cert_files(cfg: &Acme) -> (PathBuf, PathBuf) {
    let mut names: Vec<&str> = cfg.domains.iter().map(String::as_str).collect();
    names.sort_unstable();
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(cfg.directory.as_bytes());
    for n in &names {
        h.update(b"\n");
        h.update(n.as_bytes());
    }
    let first = cfg.domains.first().map_or("none", String::as_str);
    let base = format!("{}-{:08x}", safe(first), h.digest() as u32);
    let dir = Path::new(&cfg.storage);
    (
        dir.join(format!("{base}.crt")),
        dir.join(format!("{base}.key")),
    )
}

fn safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    if private {
        opts.mode(0o600);
    }
    let result = opts
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|_| f.sync_all()))
        .and_then(|_| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| format!("{}: cannot write: {e}", path.display()))
}

/// The file's bytes, `None` when it does not exist.
pub fn read(path: &Path) -> Result<Option<Vec<u8>>, String> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: cannot read: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(directory: &str, domains: &[&str]) -> Acme {
        Acme {
            directory: directory.into(),
            email: None,
            domains: domains.iter().map(|d| d.to_string()).collect(),
            challenge: Default::default(),
            storage: "/var/lib/gatehouse/acme".into(),
            directory_ca: None,
            renew_before: None,
        }
    }

    #[test]
    fn names_keep_servers_and_domain_sets_apart() {
        let le = cfg(
            "https://acme-v02.api.letsencrypt.org/directory",
            &["a.example", "b.example"],
        );
        assert_eq!(
            account_file(&le),
            Path::new("/var/lib/gatehouse/acme/account-acme-v02.api.letsencrypt.org.json")
        );
        let pebble = cfg("https://127.0.0.1:14000/dir", &["a.example"]);
        assert_eq!(
            account_file(&pebble),
            Path::new("/var/lib/gatehouse/acme/account-127.0.0.1_14000.json")
        );
        let swapped = cfg(
            "https://acme-v02.api.letsencrypt.org/directory",
            &["b.example", "a.example"],
        );
        let (crt, key) = cert_files(&le);
        assert!(crt.to_string_lossy().ends_with(".crt") && key.to_string_lossy().ends_with(".key"));
        assert_eq!(
            crt.file_name().unwrap().to_string_lossy().split('-').next(),
            Some("a.example")
        );
        assert_ne!(
            cert_files(&le).0,
            cert_files(&swapped).0,
            "the first name differs"
        );
        let other_set = cfg(
            "https://acme-v02.api.letsencrypt.org/directory",
            &["a.example"],
        );
        assert_ne!(cert_files(&le).0, cert_files(&other_set).0);
    }

    #[test]
    fn atomic_writes_leave_no_temporary_file_and_keys_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.key");
        write_atomic(&p, b"one", true).unwrap();
        write_atomic(&p, b"two", true).unwrap();
        assert_eq!(read(&p).unwrap().as_deref(), Some(&b"two"[..]));
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(read(&dir.path().join("missing")).unwrap(), None);
    }
}
