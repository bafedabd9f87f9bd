//! The development issuer's Ed25519 key on disk: PKCS#8 PEM (what
//! `openssl genpkey -algorithm ed25519` writes, so an operator may bring
//! their own), mode 0600, made once and reused.
//!
//! A new key is written to a private temporary file and hard-linked into
//! place, which fails if the name exists: two processes (or two Apps in one
//! test binary) starting at once on one data dir end up with the same key,
//! and a reader never sees a half-written file.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::TryRngCore;

use crate::dev_issuer::DevIssuerError;

/// RFC 8410 §7: the DER of a PKCS#8 v1 Ed25519 private key up to its
/// 32-byte seed.
pub(crate) const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";

/// The PKCS#8 DER of the key at `path`, made first if there is none.
pub(crate) fn load_or_create(path: &Path) -> Result<Vec<u8>, DevIssuerError> {
    // Twice at most: a lost race to create means reading the winner's key.
    for _ in 0..2 {
        match read(path)? {
            Some(der) => return Ok(der),
            None => {
                if let Some(der) = create(path)? {
                    return Ok(der);
                }
            }
        }
    }
    read(path)?.ok_or_else(|| io_error(path, ErrorKind::NotFound.into()))
}

/// The key at `path`; `None` if there is no file.
fn read(path: &Path) -> Result<Option<Vec<u8>>, DevIssuerError> {
    let metadata = match fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path, e)),
    };
    if !metadata.is_file() {
        return Err(bad_key(path, "not a regular file"));
    }
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(DevIssuerError::LoosePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    let pem = fs::read_to_string(path).map_err(|e| io_error(path, e))?;
    decode_pem(&pem)
        .map(Some)
        .map_err(|reason| bad_key(path, reason))
}

/// Writes a new key; `None` if another process wrote one first.
fn create(path: &Path) -> Result<Option<Vec<u8>>, DevIssuerError> {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut seed)
        .map_err(|e| DevIssuerError::Random(e.to_string()))?;
    let mut der = PKCS8_ED25519_PREFIX.to_vec();
    der.extend_from_slice(&seed);
    let temporary = temporary_name(path);
    let written = write_new(&temporary, encode_pem(&der).as_bytes(), 0o600)
        .and_then(|()| fs::hard_link(&temporary, path));
    // The temporary name goes whatever happened; the key lives on under
    // `path` when the link was made.
    let _ = fs::remove_file(&temporary);
    match written {
        Ok(()) => {
            sync_dir(path);
            tracing::info!(path = %path.display(), "made a development issuer key");
            Ok(Some(der))
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(None),
        Err(e) => Err(io_error(path, e)),
    }
}

/// Replaces `path` with `contents` at once (temporary file, then rename).
pub(crate) fn replace(path: &Path, contents: &[u8], mode: u32) -> Result<(), DevIssuerError> {
    let temporary = temporary_name(path);
    let written = write_new(&temporary, contents, mode).and_then(|()| fs::rename(&temporary, path));
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    written.map_err(|e| io_error(path, e))
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

fn temporary_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(Default::default, |n| n.to_string_lossy());
    path.with_file_name(format!(
        ".{name}.{}.{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ))
}

/// So the new name survives a crash; best effort.
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent().and_then(|d| fs::File::open(d).ok()) {
        let _ = dir.sync_all();
    }
}

fn encode_pem(der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut pem = format!("{PEM_BEGIN}\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str(PEM_END);
    pem.push('\n');
    pem
}

fn decode_pem(pem: &str) -> Result<Vec<u8>, &'static str> {
    let begin = pem.find(PEM_BEGIN).ok_or("no BEGIN PRIVATE KEY line")?;
    let rest = &pem[begin + PEM_BEGIN.len()..];
    let end = rest.find(PEM_END).ok_or("no END PRIVATE KEY line")?;
    let body: String = rest[..end].split_whitespace().collect();
    let der = STANDARD.decode(body).map_err(|_| "not base64")?;
    // Only the plain v1 form: a longer one (with the public key, or another
    // algorithm) is refused rather than half understood.
    if der.len() != PKCS8_ED25519_PREFIX.len() + 32 || !der.starts_with(&PKCS8_ED25519_PREFIX) {
        return Err("not a PKCS#8 v1 Ed25519 key");
    }
    Ok(der)
}

fn io_error(path: &Path, source: std::io::Error) -> DevIssuerError {
    DevIssuerError::Io {
        path: path.to_owned(),
        source,
    }
}

fn bad_key(path: &Path, reason: &'static str) -> DevIssuerError {
    DevIssuerError::BadKey {
        path: path.to_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_and_openssl_form() {
        let mut der = PKCS8_ED25519_PREFIX.to_vec();
        der.extend_from_slice(&[7; 32]);
        assert_eq!(decode_pem(&encode_pem(&der)), Ok(der));
        // What `openssl genpkey -algorithm ed25519` writes.
        let openssl = include_str!("../testdata/ed25519-openssl.pem");
        assert!(decode_pem(openssl).is_ok());
        let rsa = include_str!("../testdata/rsa-a.pem");
        assert!(decode_pem(rsa).is_err());
        assert!(decode_pem(include_str!("../testdata/ec-a.pem")).is_err());
    }

    #[test]
    fn made_once_with_mode_0600_then_reused() {
        let dir = tempfile::tempdir().expect("temporary dir");
        let path = dir.path().join("key.pem");
        let first = load_or_create(&path).expect("made");
        let mode = fs::metadata(&path).expect("written").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_or_create(&path).expect("read"), first);
        let leftovers = fs::read_dir(dir.path()).expect("listed").count();
        assert_eq!(leftovers, 1, "no temporary file left behind");
    }

    #[test]
    fn looser_permissions_are_refused() {
        let dir = tempfile::tempdir().expect("temporary dir");
        let path = dir.path().join("key.pem");
        load_or_create(&path).expect("made");
        for mode in [0o640, 0o604, 0o644] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
            match load_or_create(&path) {
                Err(DevIssuerError::LoosePermissions { mode: seen, .. }) => assert_eq!(seen, mode),
                other => panic!("mode {mode:o} accepted: {other:?}"),
            }
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).expect("chmod");
        assert!(load_or_create(&path).is_ok(), "stricter is fine");
    }

    #[test]
    fn racing_creators_agree() {
        let dir = tempfile::tempdir().expect("temporary dir");
        let path = dir.path().join("key.pem");
        let keys: Vec<Vec<u8>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| load_or_create(&path)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("no panic").expect("a key"))
                .collect()
        });
        assert!(keys.windows(2).all(|w| w[0] == w[1]), "one key for all");
    }

    #[test]
    fn a_garbled_key_is_refused() {
        let dir = tempfile::tempdir().expect("temporary dir");
        let path = dir.path().join("key.pem");
        write_new(&path, b"hello", 0o600).expect("written");
        assert!(matches!(
            load_or_create(&path),
            Err(DevIssuerError::BadKey { .. })
        ));
    }
}
