//! A test PKI made per test with the `openssl` CLI (installed by `.ci/setup test`): a CA, and
//! leaf certificates it signs for the names a test asks for, in a temporary directory.
//!
//! Include it next to the harness: `mod common;` then `#[path = "common/pki.rs"] mod pki;`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A CA in a temporary directory.
pub struct Pki {
    pub dir: tempfile::TempDir,
    /// The CA certificate (PEM): what a client trusts.
    pub ca: PathBuf,
    ca_key: PathBuf,
    serial: AtomicU32,
}

/// A leaf certificate and its key.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The serial number, as `openssl x509 -serial` prints it (upper-case hex).
    pub serial: String,
}

pub fn openssl(args: &[&str]) -> std::process::Output {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the openssl CLI ({e}): run `.ci/setup test`"));
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temporary path")
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let (ca, ca_key) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
        openssl(&[
            "req",
            "-x509",
            "-nodes",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-subj",
            "/CN=stitch test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
            "-days",
            "3",
            "-keyout",
            s(&ca_key),
            "-out",
            s(&ca),
        ]);
        Pki {
            dir,
            ca,
            ca_key,
            serial: AtomicU32::new(0x1000),
        }
    }

    /// A leaf for `sans` (DNS names), CN `cn`, valid for `days` from now (negative: expired),
    /// written as `FILE.pem` and `FILE.key`.
    pub fn leaf(&self, file: &str, cn: &str, sans: &[&str], days: i64) -> Leaf {
        let d = self.dir.path();
        let (cert, key, csr, ext) = (
            d.join(format!("{file}.pem")),
            d.join(format!("{file}.key")),
            d.join(format!("{file}.csr")),
            d.join(format!("{file}.ext")),
        );
        openssl(&[
            "req",
            "-new",
            "-nodes",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            s(&key),
            "-out",
            s(&csr),
        ]);
        let mut ext_text = String::from("basicConstraints=CA:FALSE\n");
        if !sans.is_empty() {
            let list: Vec<String> = sans.iter().map(|n| format!("DNS:{n}")).collect();
            ext_text.push_str(&format!("subjectAltName={}\n", list.join(",")));
        }
        std::fs::write(&ext, ext_text).unwrap();
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        openssl(&[
            "x509",
            "-req",
            "-in",
            s(&csr),
            "-CA",
            s(&self.ca),
            "-CAkey",
            s(&self.ca_key),
            "-set_serial",
            &serial.to_string(),
            "-days",
            &days.to_string(),
            "-extfile",
            s(&ext),
            "-out",
            s(&cert),
        ]);
        Leaf {
            cert,
            key,
            serial: format!("{serial:X}"),
        }
    }

    /// A path in the PKI's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The serial of a PEM certificate (upper-case hex, as `openssl x509 -serial` prints it).
pub fn serial_of_pem(pem: &[u8]) -> String {
    let c = openssl::x509::X509::from_pem(pem).expect("a PEM certificate");
    let bn = c.serial_number().to_bn().unwrap();
    bn.to_hex_str()
        .unwrap()
        .to_string()
        .trim_start_matches('0')
        .to_string()
}
