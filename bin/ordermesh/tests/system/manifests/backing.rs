//! What the overlays expect of the cluster around them, the test's own:
//! the identity provider's JWKS over HTTPS, a three-node NATS JetStream
//! cluster, and the Secrets made outside git.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ordermesh_testkit::hosts::Host;
use ordermesh_testkit::process::{ChildProcess, Launch};
use ordermesh_testkit::tls::TestCa;
use ordermesh_testkit::tokens;

/// The machine's CA bundle with `ca` added: the image's
/// /etc/ssl/certs/ca-certificates.crt in the sandboxes.
pub fn bundle(ca: &TestCa) -> PathBuf {
    let mut bundle = std::fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default();
    bundle.extend(std::fs::read(ca.cert()).unwrap());
    let path = ca.dir().join("bundle.crt");
    std::fs::write(&path, bundle).unwrap();
    use std::os::unix::fs::PermissionsExt;
    for dir in [ca.dir(), path.as_path()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    path
}

/// The issuer's JWKS at `url` (https://NAME[:PORT]/PATH), served from `host`
/// by `openssl s_server -WWW` with a certificate of `ca` for NAME.
pub async fn serve_jwks(host: &Host, ca: &TestCa, url: &str) -> (String, ChildProcess) {
    let rest = url.strip_prefix("https://").expect("an https JWKS URL");
    let (authority, path) = rest.split_once('/').expect("a JWKS path");
    let (name, port) = authority
        .split_once(':')
        .map_or((authority, 443), |(n, p)| (n, p.parse().expect("a port")));
    let (cert, key) = ca.server_cert(name, &format!("DNS:{name}"));
    let root = ca.dir().join("www");
    let file = root.join(path);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, tokens::jwks(&[tokens::Key::Rsa]).to_string()).unwrap();
    // s_server serves files from its working directory.
    let script = format!(
        "cd '{}' && exec openssl s_server -quiet -WWW -accept {} -cert '{}' -key '{}'",
        root.display(),
        host.socket(port),
        cert.display(),
        key.display()
    );
    let server = ChildProcess::start(host.launch("sh").args(["-c", &script]))
        .await
        .expect("start openssl s_server");
    let target = host.socket(port);
    super::world::eventually_connects(target).await;
    (name.to_owned(), server)
}

/// A three-node JetStream cluster, one node per host, on 4222 (clients)
/// and 6222 (routes).
pub async fn nats_cluster(hosts: &[Host]) -> (Vec<ChildProcess>, tempfile::TempDir) {
    let bin = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .find(|path| Path::new(path).is_file())
        .expect("nats-server (Debian package nats-server), checked by the caller");
    let store = tempfile::tempdir().unwrap();
    let routes = hosts
        .iter()
        .map(|h| format!("nats://{}", h.socket(6222)))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes = Vec::new();
    for host in hosts {
        let launch: Launch = host.launch(bin).args([
            "-js".to_owned(),
            "-n".to_owned(),
            host.name().to_owned(),
            "-a".to_owned(),
            host.addr().to_string(),
            "-p".to_owned(),
            "4222".to_owned(),
            "--cluster_name".to_owned(),
            "ordermesh".to_owned(),
            "--cluster".to_owned(),
            format!("nats://{}", host.socket(6222)),
            "--routes".to_owned(),
            routes.clone(),
            "-sd".to_owned(),
            store.path().join(host.name()).display().to_string(),
        ]);
        nodes.push(
            ChildProcess::start(launch)
                .await
                .expect("start nats-server"),
        );
    }
    for host in hosts {
        super::world::eventually_connects(host.socket(4222)).await;
    }
    (nodes, store)
}

/// A NATS credentials file as `nsc` writes one: a user JWT and the user's
/// NKey seed. The test's NATS runs without authentication, so the JWT is
/// never checked; the seed is real (the client signs the server's nonce
/// with it), made here: base32 of the seed and user prefixes, 32 random
/// bytes and a CRC-16/XMODEM, as the nkeys format defines.
pub fn nats_creds() -> String {
    let mut raw = vec![(18 << 3) | ((20 << 3) >> 5), ((20u8 << 3) & 31) << 3];
    let mut random = [0u8; 32];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").unwrap(),
        &mut random,
    )
    .unwrap();
    raw.extend(random);
    let crc = crc16_xmodem(&raw);
    raw.extend(crc.to_le_bytes());
    let seed = base32(&raw);
    let header = base64_url(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = base64_url(br#"{"name":"ordermesh","nats":{"type":"user","version":2}}"#);
    format!(
        "-----BEGIN NATS USER JWT-----\n{header}.{claims}.c2ln\n------END NATS USER JWT------\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    )
}

fn crc16_xmodem(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for byte in bytes {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0);
    for byte in bytes {
        buffer = (buffer << 8) | u32::from(*byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The Secrets an operator makes outside git, as the components' comments
/// say, with the values this test's cluster needs.
pub fn secrets(database_url: Option<&str>) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut secrets = BTreeMap::new();
    if let Some(url) = database_url {
        secrets.insert(
            "ordermesh-database".to_owned(),
            BTreeMap::from([("url".to_owned(), url.to_owned())]),
        );
    }
    secrets.insert(
        "ordermesh-nats".to_owned(),
        BTreeMap::from([("nats.creds".to_owned(), nats_creds())]),
    );
    secrets
}

#[test]
fn base32_and_crc_match_the_nkeys_format() {
    // RFC 4648's test vector, unpadded; CRC-16/XMODEM's check value.
    assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
    assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
}
