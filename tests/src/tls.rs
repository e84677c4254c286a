//! Throwaway certificates for the TLS tests: a CA, a server certificate for the loopback names (127.0.0.1, ::1,
//! localhost) and a client certificate signed by it, plus a second, unrelated CA that a client must refuse.
//! Generated in-process (rcgen, ring), written as PEM files that Prometheus, Alertmanager, grpcio and stunnel read.
//! And `Stunnel`, a TLS-terminating proxy (Debian's stunnel4) for servers that speak only plaintext.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::{Proc, find_tool, wait_for};

/// PEM files in one directory.
#[derive(Debug, Clone)]
pub struct TestPki {
    pub dir: PathBuf,
    /// The CA that signed `server_*` and `client_*`.
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed nothing here: trusting only it must fail the handshake.
    pub other_ca_cert: PathBuf,
    /// A client certificate signed by `other_ca_cert` (refused by a server that requires `ca_cert`).
    pub other_client_cert: PathBuf,
    pub other_client_key: PathBuf,
}

struct Ca {
    params: CertificateParams,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("ca params: {e}"));
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ca { params, key: KeyPair::generate().unwrap_or_else(|e| panic!("ca key: {e}")) }
    }

    fn self_signed_pem(&self) -> String {
        self.params.clone().self_signed(&self.key).unwrap_or_else(|e| panic!("self-sign: {e}")).pem()
    }

    /// A leaf certificate signed by this CA: (certificate PEM, key PEM).
    fn leaf(&self, name: &str, sans: &[SanType], usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("params: {e}"));
        params.distinguished_name.push(DnType::CommonName, name);
        params.subject_alt_names = sans.to_vec();
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("key: {e}"));
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap_or_else(|e| panic!("sign {name}: {e}"));
        (cert.pem(), key.serialize_pem())
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    p
}

/// The loopback names a server certificate covers.
pub fn loopback_sans() -> Vec<SanType> {
    vec![
        SanType::IpAddress([127, 0, 0, 1].into()),
        SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()),
        SanType::DnsName("localhost".try_into().unwrap_or_else(|e| panic!("dns name: {e}"))),
    ]
}

/// Writes a fresh PKI into `dir` (created if missing).
pub fn pki(dir: &Path) -> TestPki {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let ca = Ca::new("framewatch test CA");
    let other = Ca::new("some other CA");
    let (server_cert, server_key) = ca.leaf("framewatch", &loopback_sans(), ExtendedKeyUsagePurpose::ServerAuth);
    let (client_cert, client_key) = ca.leaf("camera-7", &[], ExtendedKeyUsagePurpose::ClientAuth);
    let (other_client_cert, other_client_key) = other.leaf("intruder", &[], ExtendedKeyUsagePurpose::ClientAuth);
    TestPki {
        dir: dir.to_path_buf(),
        ca_cert: write(dir, "ca.pem", &ca.self_signed_pem()),
        server_cert: write(dir, "server.pem", &server_cert),
        server_key: write(dir, "server.key", &server_key),
        client_cert: write(dir, "client.pem", &client_cert),
        client_key: write(dir, "client.key", &client_key),
        other_ca_cert: write(dir, "other-ca.pem", &other.self_signed_pem()),
        other_client_cert: write(dir, "other-client.pem", &other_client_cert),
        other_client_key: write(dir, "other-client.key", &other_client_key),
    }
}

/// Re-issues the server certificate (same CA, new key) over the existing files: a certificate rotation.
/// Returns the new certificate's PEM so a test can tell which one a server presents.
pub fn rotate_server_cert(pki: &TestPki) -> String {
    // A new CA would break the clients' trust; rotation keeps the CA. The CA's key is not kept on disk, so the
    // rotated certificate comes from a fresh CA written over `ca.pem` too: tests re-read it after rotating.
    let ca = Ca::new("framewatch test CA");
    let (cert, key) = ca.leaf("framewatch", &loopback_sans(), ExtendedKeyUsagePurpose::ServerAuth);
    write(&pki.dir, "ca.pem", &ca.self_signed_pem());
    // Key first, certificate last: a watcher that reloads on the certificate's change sees a matching pair.
    write(&pki.dir, "server.key", &key);
    write(&pki.dir, "server.pem", &cert);
    cert
}

/// A rustls client configuration (ring provider) trusting only `ca`, presenting `identity` (certificate, key) when
/// given, and offering `alpn` (`h2` for gRPC, `http/1.1` for HTTP).
pub fn client_config(ca: &Path, identity: Option<(&Path, &Path)>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap_or_else(|e| panic!("read {}: {e}", ca.display())) {
        roots.add(cert.unwrap_or_else(|e| panic!("{}: {e}", ca.display()))).unwrap_or_else(|e| panic!("trust: {e}"));
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| panic!("TLS versions: {e}"))
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .unwrap_or_else(|e| panic!("read {}: {e}", cert.display()));
            let key = PrivateKeyDer::from_pem_file(key).unwrap_or_else(|e| panic!("read {}: {e}", key.display()));
            builder.with_client_auth_cert(chain, key).unwrap_or_else(|e| panic!("client identity: {e}"))
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// GET `https://addr/path` with `tls` and optional request headers: (status, body), or None when the connection
/// or the handshake fails (or nothing comes back within 10 s).
pub async fn https_get(
    addr: SocketAddr,
    path: &str,
    tls: Arc<rustls::ClientConfig>,
    headers: &[(&str, &str)],
) -> Option<(u16, String)> {
    use http_body_util::{BodyExt, Empty};
    // hyper-rustls offers ALPN http/1.1 itself and refuses a config that already has protocols.
    let mut tls = (*tls).clone();
    tls.alpn_protocols.clear();
    let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_only().enable_http1().build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https);
    let mut req = hyper::Request::get(format!("https://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Empty::<hyper::body::Bytes>::new()).ok()?;
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req)).await.ok()?.ok()?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// stunnel in server mode on 127.0.0.1:`port`: it terminates TLS with `pki`'s server certificate (valid for
/// 127.0.0.1 and localhost) and forwards the plaintext to 127.0.0.1:`target`. Runs in the foreground as a child of
/// the test, killed on drop; its log is `NAME.log` in the scratch directory.
#[derive(Debug)]
pub struct Stunnel {
    pub port: u16,
    proc: Proc,
}

impl Stunnel {
    pub fn start(dir: &Path, name: &str, pki: &TestPki, port: u16, target: u16) -> Stunnel {
        // Debian installs the binary as stunnel4, with stunnel as an alternative link that may be absent.
        let bin = find_tool("stunnel4")
            .or_else(|| find_tool("stunnel"))
            .unwrap_or_else(|| panic!("stunnel is not installed: scripts/test installs it (apt-get install stunnel4)"));
        let conf = format!(
            "foreground = yes\n\
             pid =\n\
             debug = notice\n\
             [{name}]\n\
             accept = 127.0.0.1:{port}\n\
             connect = 127.0.0.1:{target}\n\
             cert = {}\n\
             key = {}\n",
            pki.server_cert.display(),
            pki.server_key.display(),
        );
        let path = write(dir, &format!("{name}.conf"), &conf);
        let proc = Proc::start(&bin, &[path.display().to_string()], dir, name);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_for(&format!("stunnel to listen on {addr} (log {})", proc.log.display()), Duration::from_secs(20), || {
            TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok().map(drop)
        });
        Stunnel { port, proc }
    }

    pub fn log_text(&self) -> String {
        self.proc.log_text()
    }
}
