//! A certificate authority of a test's own, made with openssl, and the
//! server certificates it signs: for the servers tests start with TLS
//! (a private PostgreSQL, an HTTPS JWKS host).

use std::path::{Path, PathBuf};
use std::process::Command;

/// `ca.crt` and `ca.key` in a folder of their own, removed when dropped.
pub struct TestCa {
    dir: tempfile::TempDir,
}

impl TestCa {
    /// A new P-256 CA whose subject is `common_name`, valid for a day.
    pub fn new(common_name: &str) -> Self {
        let ca = Self {
            dir: tempfile::tempdir().expect("a folder for the test CA"),
        };
        ca.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            &format!("/CN={common_name}"),
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        ca
    }

    /// The CA's folder (its files, and whatever a test keeps beside them).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA's certificate, for a client to trust.
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// `NAME.crt` and `NAME.key`: a server certificate signed by this CA for
    /// the subject alternative name `san` (`DNS:host` or `IP:127.0.0.1`).
    pub fn server_cert(&self, name: &str, san: &str) -> (PathBuf, PathBuf) {
        let (key, csr, ext, crt) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.ext"),
            format!("{name}.crt"),
        );
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &key,
            "-out",
            &csr,
        ]);
        std::fs::write(
            self.dir.path().join(&ext),
            format!(
                "subjectAltName={san}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"
            ),
        )
        .expect("write the certificate's extensions");
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &ext,
            "-out",
            &crt,
        ]);
        (self.dir.path().join(crt), self.dir.path().join(key))
    }

    fn openssl(&self, args: &[&str]) {
        let output = Command::new("openssl")
            .current_dir(self.dir.path())
            .args(args)
            .output()
            .expect("run openssl");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
