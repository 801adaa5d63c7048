//! The PKI, on the controller only (no SSH here): the root CA kept in the state
//! directory, certificates issued from a host's CSR with the SANs the inventory says,
//! and the decision whether a certificate on a host must be reissued.

use crate::state::State;
use ::time::{Duration, OffsetDateTime};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose as Eku, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber,
};
use std::net::IpAddr;
use x509_parser::prelude::*;

pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const CA_DAYS: i64 = 3650;

pub mod context;
pub mod rotation;
pub const DEFAULT_DAYS: i64 = 365;

/// What a certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// etcd peer and server: serverAuth and clientAuth (etcd dials itself with its server cert).
    Etcd,
    /// A host's general certificate: serverAuth and clientAuth.
    Host,
    /// The Docker daemon's TLS socket: serverAuth.
    Docker,
    /// A client (etcdctl, docker --tlsverify, an operator): clientAuth.
    Client,
}

impl Profile {
    pub fn parse(s: &str) -> Result<Profile, String> {
        Ok(match s {
            "etcd" => Profile::Etcd,
            "host" => Profile::Host,
            "docker" => Profile::Docker,
            "client" => Profile::Client,
            other => {
                return Err(format!(
                    "unknown certificate profile `{other}`: use etcd, host, docker or client"
                ))
            }
        })
    }

    pub fn ekus(self) -> Vec<Eku> {
        match self {
            Profile::Etcd | Profile::Host => vec![Eku::ServerAuth, Eku::ClientAuth],
            Profile::Docker => vec![Eku::ServerAuth],
            Profile::Client => vec![Eku::ClientAuth],
        }
    }

    fn oids(self) -> (bool, bool) {
        match self {
            Profile::Etcd | Profile::Host => (true, true),
            Profile::Docker => (true, false),
            Profile::Client => (false, true),
        }
    }
}

/// The root CA: its key never leaves the controller.
pub struct Ca {
    pub cert_pem: String,
    key: KeyPair,
    der: Vec<u8>,
}

fn random_serial() -> SerialNumber {
    let mut b = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    b[0] = (b[0] & 0x7f) | 0x01; // positive and 16 bytes long
    SerialNumber::from_slice(&b)
}

fn pem_der(pem: &str) -> Result<Vec<u8>, String> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    Ok(p.contents)
}

impl Ca {
    /// A new CA: ECDSA P-256, a random serial, ten years.
    pub fn create(name: &str) -> Result<Ca, String> {
        let key = KeyPair::generate().map_err(|e| format!("cannot make a CA key: {e}"))?;
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("provision root CA ({name})"));
        dn.push(DnType::OrganizationName, "provision");
        p.distinguished_name = dn;
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        p.serial_number = Some(random_serial());
        let now = OffsetDateTime::now_utc();
        p.not_before = now - Duration::hours(1);
        p.not_after = now + Duration::days(CA_DAYS);
        let cert = p
            .self_signed(&key)
            .map_err(|e| format!("cannot sign the CA: {e}"))?;
        Ok(Ca {
            cert_pem: cert.pem(),
            der: cert.der().to_vec(),
            key,
        })
    }

    /// The CA of the state directory: None when it has none, Err when it is unreadable
    /// or half there (never replaced silently).
    pub fn load(state: &State) -> Result<Option<Ca>, String> {
        Ca::load_pair(state, CA_CERT, CA_KEY)
    }

    /// A CA kept as `cert_name` and `key_name` in the state directory.
    pub fn load_pair(state: &State, cert_name: &str, key_name: &str) -> Result<Option<Ca>, String> {
        let (c, k) = (state.read(cert_name), state.read(key_name));
        let dir = state.dir.display();
        match (c, k) {
            (None, None) => Ok(None),
            (Some(c), Some(k)) => {
                let cert_pem =
                    String::from_utf8(c).map_err(|_| format!("{dir}/{cert_name} is not text"))?;
                let key_pem =
                    String::from_utf8(k).map_err(|_| format!("{dir}/{key_name} is not text"))?;
                let key = KeyPair::from_pem(&key_pem)
                    .map_err(|e| format!("{dir}/{key_name}: not a private key: {e}"))?;
                let der = pem_der(&cert_pem).map_err(|e| format!("{dir}/{cert_name}: {e}"))?;
                let ca = Ca { cert_pem, key, der };
                let (_, x) = parse_x509_certificate(&ca.der)
                    .map_err(|e| format!("{dir}/{cert_name}: {e}"))?;
                if x.public_key().raw != ca.key.subject_public_key_info().as_slice() {
                    return Err(format!("{dir}/{key_name} does not belong to {dir}/{cert_name}: restore both from the same backup"));
                }
                Ok(Some(ca))
            }
            (Some(_), None) => Err(format!(
                "{dir} has {cert_name} but no {key_name}: restore the key from your backup"
            )),
            (None, Some(_)) => Err(format!(
                "{dir} has {key_name} but no {cert_name}: restore the certificate from your backup"
            )),
        }
    }

    pub fn save(&self, state: &State) -> Result<(), String> {
        self.save_pair(state, CA_CERT, CA_KEY)
    }

    pub fn save_pair(&self, state: &State, cert: &str, key: &str) -> Result<(), String> {
        state.write(key, self.key.serialize_pem().as_bytes(), 0o600)?;
        state.write(cert, self.cert_pem.as_bytes(), 0o644)
    }

    fn issuer(&self) -> Result<Issuer<'_, &KeyPair>, String> {
        Issuer::from_ca_cert_pem(&self.cert_pem, &self.key).map_err(|e| format!("CA: {e}"))
    }

    /// Signs a certificate for the key in `csr_pem`; names and SANs come from the caller
    /// (the inventory), never from the CSR.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        cn: &str,
        sans: &[String],
        profile: Profile,
        days: i64,
    ) -> Result<String, String> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| format!("the host's CSR is not valid: {e}"))?;
        let p = leaf_params(cn, sans, profile, days)?;
        let cert = p
            .signed_by(&csr.public_key, &self.issuer()?)
            .map_err(|e| format!("cannot sign: {e}"))?;
        Ok(cert.pem())
    }

    /// A client certificate and its key, made here (for an operator's own machine).
    pub fn client(&self, name: &str, days: i64) -> Result<(String, String), String> {
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let p = leaf_params(name, &[], Profile::Client, days)?;
        let cert = p
            .signed_by(&key, &self.issuer()?)
            .map_err(|e| format!("cannot sign: {e}"))?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// A server certificate and its key, made here (for the lab's own registry).
    pub fn server(
        &self,
        name: &str,
        sans: &[String],
        days: i64,
    ) -> Result<(String, String), String> {
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let p = leaf_params(name, sans, Profile::Docker, days)?;
        let cert = p
            .signed_by(&key, &self.issuer()?)
            .map_err(|e| format!("cannot sign: {e}"))?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Reads a certificate and checks it against this CA.
    pub fn inspect(&self, pem: &str) -> Result<CertInfo, String> {
        inspect(pem, Some(&self.der))
    }
}

fn leaf_params(
    cn: &str,
    sans: &[String],
    profile: Profile,
    days: i64,
) -> Result<CertificateParams, String> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "provision");
    p.distinguished_name = dn;
    p.subject_alt_names = sans
        .iter()
        .map(|s| match s.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => s
                .clone()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|e| format!("SAN `{s}`: {e}")),
        })
        .collect::<Result<_, String>>()?;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = profile.ekus();
    p.serial_number = Some(random_serial());
    p.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::minutes(5);
    p.not_after = now + Duration::days(days.max(1));
    Ok(p)
}

/// What a certificate says about itself.
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub subject: String,
    pub sans: Vec<String>,
    pub not_before: i64,
    pub not_after: i64,
    /// Signed by the CA it was checked against.
    pub issuer_ok: bool,
    pub issuer: String,
    pub spki: Vec<u8>,
    pub server_auth: bool,
    pub client_auth: bool,
}

impl CertInfo {
    pub fn days_left(&self, now: i64) -> i64 {
        (self.not_after - now).div_euclid(86400)
    }
}

/// Parses a PEM certificate; `ca_der` checks its signature.
pub fn inspect(pem: &str, ca_der: Option<&[u8]>) -> Result<CertInfo, String> {
    let der = pem_der(pem)?;
    let (_, x) = parse_x509_certificate(&der).map_err(|e| format!("not a certificate: {e}"))?;
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = x.subject_alternative_name() {
        for n in &ext.value.general_names {
            match n {
                GeneralName::DNSName(d) => sans.push(d.to_string()),
                GeneralName::IPAddress(b) => {
                    let ip = match b.len() {
                        4 => IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or_default()),
                        16 => IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or_default()),
                        _ => continue,
                    };
                    sans.push(ip.to_string());
                }
                _ => {}
            }
        }
    }
    let (server_auth, client_auth) = match x.extended_key_usage() {
        Ok(Some(e)) => (e.value.server_auth, e.value.client_auth),
        _ => (false, false),
    };
    let issuer_ok = match ca_der {
        Some(ca) => match parse_x509_certificate(ca) {
            Ok((_, c)) => {
                x.issuer() == c.subject() && x.verify_signature(Some(c.public_key())).is_ok()
            }
            Err(_) => false,
        },
        None => false,
    };
    Ok(CertInfo {
        subject: x.subject().to_string(),
        sans,
        not_before: x.validity().not_before.timestamp(),
        not_after: x.validity().not_after.timestamp(),
        issuer_ok,
        issuer: x.issuer().to_string(),
        spki: x.public_key().raw.to_vec(),
        server_auth,
        client_auth,
    })
}

/// The public key (SubjectPublicKeyInfo DER) of a CSR, after checking its signature.
pub fn csr_spki(csr_pem: &str) -> Result<Vec<u8>, String> {
    let (_, p) = x509_parser::pem::parse_x509_pem(csr_pem.as_bytes())
        .map_err(|e| format!("not a PEM CSR: {e}"))?;
    let (_, csr) =
        X509CertificationRequest::from_der(&p.contents).map_err(|e| format!("not a CSR: {e}"))?;
    csr.verify_signature()
        .map_err(|_| "the CSR's signature is not valid".to_string())?;
    Ok(csr.certification_request_info.subject_pki.raw.to_vec())
}

/// Renew when less than a third of the wanted lifetime is left, at most 30 days before expiry.
pub fn renew_window(days: i64) -> i64 {
    (days * 86400 / 3).min(30 * 86400)
}

/// Why the certificate on a host must be (re)issued, or None when it is right as it is.
pub fn reissue_reason(
    cur: Option<&CertInfo>,
    key_spki: &[u8],
    sans: &[String],
    profile: Profile,
    days: i64,
    now: i64,
) -> Option<String> {
    let Some(c) = cur else {
        return Some("no certificate yet".into());
    };
    if !c.issuer_ok {
        return Some(format!("issued by another CA ({})", c.issuer));
    }
    if c.spki != key_spki {
        return Some("the certificate does not match the host's key".into());
    }
    let mut have: Vec<&str> = c.sans.iter().map(String::as_str).collect();
    let mut want: Vec<&str> = sans.iter().map(String::as_str).collect();
    have.sort();
    have.dedup();
    want.sort();
    want.dedup();
    if have != want {
        return Some(format!(
            "its names changed ({} -> {})",
            have.join(","),
            want.join(",")
        ));
    }
    if (c.server_auth, c.client_auth) != profile.oids() {
        return Some("its key usages differ from the profile".into());
    }
    if c.not_after - now < renew_window(days) {
        return Some(format!("it expires in {} days", c.days_left(now)));
    }
    if c.not_before > now + 300 {
        return Some("it is not valid yet".into());
    }
    None
}

pub fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr(key: &KeyPair) -> String {
        CertificateParams::new(vec!["ignored.example".to_string()])
            .unwrap()
            .serialize_request(key)
            .unwrap()
            .pem()
            .unwrap()
    }

    #[test]
    fn issue_and_reissue_decisions() {
        let ca = Ca::create("test").unwrap();
        let other = Ca::create("other").unwrap();
        let key = KeyPair::generate().unwrap();
        let req = csr(&key);
        let spki = csr_spki(&req).unwrap();
        let sans = vec!["node1".to_string(), "10.0.0.1".into(), "127.0.0.1".into()];
        let pem = ca
            .sign_csr(&req, "node1", &sans, Profile::Etcd, 365)
            .unwrap();
        let info = ca.inspect(&pem).unwrap();
        assert!(info.issuer_ok && info.server_auth && info.client_auth);
        assert!(
            !info.sans.contains(&"ignored.example".to_string()),
            "SANs come from the inventory"
        );
        let now = now();
        assert_eq!(
            reissue_reason(Some(&info), &spki, &sans, Profile::Etcd, 365, now),
            None
        );
        // order of SANs does not matter
        let mut rev = sans.clone();
        rev.reverse();
        assert_eq!(
            reissue_reason(Some(&info), &spki, &rev, Profile::Etcd, 365, now),
            None
        );
        let more = [sans.clone(), vec!["10.0.0.9".into()]].concat();
        assert!(
            reissue_reason(Some(&info), &spki, &more, Profile::Etcd, 365, now)
                .unwrap()
                .contains("names changed")
        );
        assert!(
            reissue_reason(Some(&info), &spki, &sans, Profile::Docker, 365, now)
                .unwrap()
                .contains("usages")
        );
        assert!(reissue_reason(None, &spki, &sans, Profile::Etcd, 365, now).is_some());
        // another key on the host
        let k2 = KeyPair::generate().unwrap();
        let spki2 = csr_spki(&csr(&k2)).unwrap();
        assert!(
            reissue_reason(Some(&info), &spki2, &sans, Profile::Etcd, 365, now)
                .unwrap()
                .contains("match")
        );
        // another CA
        let foreign = other.inspect(&pem).unwrap();
        assert!(!foreign.issuer_ok);
        assert!(
            reissue_reason(Some(&foreign), &spki, &sans, Profile::Etcd, 365, now)
                .unwrap()
                .contains("another CA")
        );
        // short-lived: renewed when less than the window is left
        let short = ca.sign_csr(&req, "node1", &sans, Profile::Etcd, 2).unwrap();
        let si = ca.inspect(&short).unwrap();
        assert!(
            reissue_reason(Some(&si), &spki, &sans, Profile::Etcd, 365, now)
                .unwrap()
                .contains("expires")
        );
        assert_eq!(
            reissue_reason(Some(&si), &spki, &sans, Profile::Etcd, 2, now),
            None
        );
        assert_eq!(renew_window(365), 30 * 86400);
        assert_eq!(renew_window(30), 10 * 86400);
    }

    #[test]
    fn serials_are_random_and_ca_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let st = State::lock(d.path()).unwrap();
        assert!(Ca::load(&st).unwrap().is_none());
        let ca = Ca::create("t").unwrap();
        ca.save(&st).unwrap();
        let back = Ca::load(&st).unwrap().unwrap();
        assert_eq!(back.cert_pem, ca.cert_pem);
        let key = KeyPair::generate().unwrap();
        let req = csr(&key);
        let a = inspect(
            &back
                .sign_csr(&req, "n", &["n".into()], Profile::Host, 10)
                .unwrap(),
            None,
        )
        .unwrap();
        let (c, k) = back.client("ops", 30).unwrap();
        let ci = back.inspect(&c).unwrap();
        assert!(ci.client_auth && !ci.server_auth && ci.issuer_ok);
        assert!(k.contains("PRIVATE KEY"));
        assert!(a.subject.contains("CN=n"));
        // a key without its certificate is refused, not replaced
        std::fs::remove_file(d.path().join(CA_CERT)).unwrap();
        assert!(Ca::load(&st).err().unwrap().contains("no ca.crt"));
        let p1 = CertificateParams::default();
        let _ = p1;
    }
}

/// A read-only script listing the certificates provision keeps in `dir` on a host.
pub fn list_script(dir: &str) -> String {
    format!(
        "for f in {}/*.crt; do [ -f \"$f\" ] && [ \"${{f##*/}}\" != ca.crt ] && {{ echo \"==PROVISION $f\"; cat \"$f\"; }}; done; true\n",
        crate::transport::quote(dir)
    )
}

/// One certificate found on a host.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub file: String,
    pub subject: String,
    pub sans: Vec<String>,
    pub days_left: i64,
    pub issuer_ok: bool,
    /// Inside its renewal window (a third of its lifetime, at most 30 days).
    pub expiring: bool,
    pub error: Option<String>,
}

impl Row {
    pub fn healthy(&self) -> bool {
        self.error.is_none() && self.issuer_ok && !self.expiring
    }
}

/// Reads what `list_script` printed; `ca_pem` is the CA to check the certificates against.
pub fn rows(out: &str, ca_pem: Option<&str>, now: i64) -> Vec<Row> {
    let ca = ca_pem.and_then(|p| pem_der(p).ok());
    crate::probe::sections(out)
        .into_iter()
        .map(|(file, pem)| match inspect(&pem, ca.as_deref()) {
            Ok(c) => {
                let life = (c.not_after - c.not_before).max(1);
                Row {
                    file,
                    subject: c.subject.clone(),
                    sans: c.sans.clone(),
                    days_left: c.days_left(now),
                    issuer_ok: c.issuer_ok,
                    expiring: c.not_after - now < renew_window(life / 86400),
                    error: None,
                }
            }
            Err(e) => Row {
                file,
                subject: String::new(),
                sans: Vec::new(),
                days_left: 0,
                issuer_ok: false,
                expiring: false,
                error: Some(e),
            },
        })
        .collect()
}
