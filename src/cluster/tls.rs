//! `tls_certs`: per-host certificates from the controller's CA. The host makes its key
//! (it never leaves the host) and a CSR; the controller signs it with the SANs the
//! inventory says; a certificate is reissued only when it must be (pki::reissue_reason).

use super::{put_inline, sections, Action, Ctx, Member, Seen, Step};
use crate::args::Args;
use crate::pki::{self, Ca, Profile};
use crate::transport::quote;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const TRUST: &str = "/usr/local/share/ca-certificates/provision-ca.crt";

pub fn new() -> Box<dyn Step> {
    Box::<Tls>::default()
}

#[derive(Clone, Debug)]
struct Cert {
    name: String,
    profile: Profile,
    cert: String,
    key: String,
    owner: String,
    group: String,
    key_mode: String,
}

#[derive(Clone, Debug)]
struct HostCerts {
    certs: Vec<Cert>,
    sans: Vec<String>,
    cn: String,
    days: i64,
    ca_file: String,
    trust: bool,
}

#[derive(Default)]
struct Tls {
    hosts: indexmap::IndexMap<String, HostCerts>,
    /// The CA that signs.
    ca: Option<Ca>,
    /// What hosts trust: the CA, or both CAs while a rotation is under way.
    bundle: String,
    /// The CA was made in this run (not yet saved).
    new_ca: bool,
}

fn host_certs(m: &Member) -> Result<HostCerts, String> {
    let a = Args(&m.args);
    let e = |e: String| format!("host `{}`: tls_certs: {e}", m.name);
    let dir = a
        .str("dir")
        .map_err(e)?
        .unwrap_or_else(|| "/etc/provision/pki".into());
    let days = match m.args.get("days") {
        None | Some(Value::Null) => pki::DEFAULT_DAYS,
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .filter(|d| *d > 0)
            .ok_or_else(|| e(format!("`days` must be a positive number, found {v}")))?,
    };
    let mut sans: Vec<String> = a
        .list("sans")
        .map_err(e)?
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    sans.sort();
    sans.dedup();
    if sans.is_empty() {
        return Err(e(
            "`sans` is empty: a certificate needs the host's names and addresses".into(),
        ));
    }
    let Some(Value::Array(list)) = m.args.get("certs") else {
        return Err(e("`certs` must be a list of {name, profile}".into()));
    };
    let mut certs = Vec::new();
    for c in list {
        let Value::Object(o) = c else {
            return Err(e(format!("each of `certs` is a mapping, found {c}")));
        };
        let ca = Args(o);
        let name = ca.req("name").map_err(e)?;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(e(format!(
                "certificate name `{name}`: use letters, digits, - _ ."
            )));
        }
        let profile = Profile::parse(&ca.req("profile").map_err(e)?).map_err(e)?;
        let group = ca.str("group").map_err(e)?.unwrap_or_else(|| "root".into());
        certs.push(Cert {
            cert: ca
                .str("cert")
                .map_err(e)?
                .unwrap_or_else(|| format!("{dir}/{name}.crt")),
            key: ca
                .str("key")
                .map_err(e)?
                .unwrap_or_else(|| format!("{dir}/{name}.key")),
            owner: ca.str("owner").map_err(e)?.unwrap_or_else(|| "root".into()),
            key_mode: if group == "root" {
                "600".into()
            } else {
                "640".into()
            },
            group,
            name,
            profile,
        });
    }
    for c in &certs {
        for p in [&c.cert, &c.key] {
            if !p.starts_with('/') {
                return Err(e(format!("`{p}` must be an absolute path")));
            }
        }
    }
    Ok(HostCerts {
        certs,
        sans,
        cn: m.name.clone(),
        days,
        ca_file: a
            .str("ca_file")
            .map_err(e)?
            .unwrap_or_else(|| format!("{dir}/ca.crt")),
        trust: a.bool("trust_store", true).map_err(e)?,
    })
}

fn keygen(c: &Cert) -> String {
    let k = quote(&c.key);
    format!(
        "mkdir -p \"$(dirname {k})\" && t=$(mktemp \"$(dirname {k})/.provision.XXXXXX\") && \
         openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out \"$t\" 2>/dev/null && \
         chown {}:{} \"$t\" && chmod {} \"$t\" && mv -f \"$t\" {k} || {{ rm -f \"$t\"; echo 'cannot make the key {}' >&2; exit 1; }}\n",
        quote(&c.owner),
        quote(&c.group),
        c.key_mode,
        c.key
    )
}

impl Step for Tls {
    fn prepare(&mut self, members: &[Member], cx: &Ctx) -> Result<(), String> {
        for m in members {
            self.hosts.insert(m.name.clone(), host_certs(m)?);
        }
        if let Some(t) = pki::rotation::trust(cx.state)? {
            self.bundle = t.bundle;
            self.ca = Some(t.signer);
        }
        Ok(())
    }

    fn probes(&self, _members: &[Member]) -> Vec<(String, String)> {
        self.hosts
            .iter()
            .map(|(h, hc)| {
                let mut s = String::new();
                for (i, c) in hc.certs.iter().enumerate() {
                    let k = quote(&c.key);
                    s += &format!(
                        "echo '==PROVISION key{i}'; if [ -f {k} ]; then stat -c '%a %U %G' {k}; \
                         openssl req -new -key {k} -subj /CN=provision 2>/dev/null; fi\n\
                         echo '==PROVISION crt{i}'; cat {} 2>/dev/null\n",
                        quote(&c.cert)
                    );
                }
                s += &format!(
                    "echo '==PROVISION ca'; cat {} 2>/dev/null; echo '==PROVISION trust'; cat {TRUST} 2>/dev/null; true\n",
                    quote(&hc.ca_file)
                );
                (h.clone(), s)
            })
            .collect()
    }

    fn plan(&mut self, _members: &[Member], seen: &Seen, cx: &Ctx) -> Result<Vec<Action>, String> {
        if self.ca.is_none() {
            // No CA in the state dir: make one, unless the hosts already trust one.
            let holders: Vec<&String> = seen
                .iter()
                .filter_map(|(h, r)| r.as_ref().ok().map(|o| (h, sections(&o.stdout))))
                .filter(|(_, s)| {
                    ["ca", "trust"]
                        .iter()
                        .any(|k| s.get(*k).is_some_and(|v| v.contains("BEGIN CERTIFICATE")))
                })
                .map(|(h, _)| h)
                .collect();
            if !holders.is_empty() && !cx.new_ca {
                return Err(format!(
                    "the state directory {} has no CA, but {} already hold certificates from a provision CA: \
                     restore ca.crt and ca.key into it from your backup, or run with --new-ca to make a new CA \
                     and reissue every host certificate",
                    cx.state.dir.display(),
                    holders.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                ));
            }
            let name = cx
                .inventory
                .path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let ca = Ca::create(&name)?;
            if !cx.check {
                ca.save(cx.state)?;
            }
            self.bundle = ca.cert_pem.clone();
            self.ca = Some(ca);
            self.new_ca = true;
        }
        let ca = self.ca.as_ref().expect("set above");
        let now = pki::now();
        let mut actions = Vec::new();
        for (h, hc) in &self.hosts {
            let Some(Ok(out)) = seen.get(h) else {
                continue;
            };
            let s = sections(&out.stdout);
            let mut script = String::new();
            let mut msgs = Vec::new();
            for (i, c) in hc.certs.iter().enumerate() {
                let key = s.get(&format!("key{i}")).cloned().unwrap_or_default();
                let Some((stat, csr)) = key.split_once('\n') else {
                    script += &keygen(c);
                    msgs.push(format!(
                        "make a key and have the CA sign a {} certificate ({})",
                        c.name, c.key
                    ));
                    continue;
                };
                let want_stat = format!("{} {} {}", c.key_mode, c.owner, c.group);
                if stat.trim() != want_stat {
                    script += &format!(
                        "chown {}:{} {k} && chmod {} {k} || exit 1\n",
                        quote(&c.owner),
                        quote(&c.group),
                        c.key_mode,
                        k = quote(&c.key)
                    );
                    msgs.push(format!(
                        "{} mode/owner {} -> {want_stat}",
                        c.key,
                        stat.trim()
                    ));
                }
                let spki = match pki::csr_spki(csr) {
                    Ok(k) => k,
                    Err(e) => return Err(format!("host `{h}`: {}: cannot make a CSR from the key ({e}); remove the key to have a new one made", c.key)),
                };
                let crt = s.get(&format!("crt{i}")).cloned().unwrap_or_default();
                let cur = if crt.contains("BEGIN CERTIFICATE") {
                    ca.inspect(&crt).ok()
                } else {
                    None
                };
                if let Some(why) =
                    pki::reissue_reason(cur.as_ref(), &spki, &hc.sans, c.profile, hc.days, now)
                {
                    let pem = ca.sign_csr(csr, &hc.cn, &hc.sans, c.profile, hc.days)?;
                    script += &put_inline(&c.cert, &pem, "644", "root", "root");
                    msgs.push(format!("sign a {} certificate for {h} ({why})", c.name));
                }
            }
            let bundle = self.bundle.as_str();
            if s.get("ca").map(String::as_str) != Some(bundle) {
                script += &put_inline(&hc.ca_file, bundle, "644", "root", "root");
                msgs.push(format!("install the CA certificate at {}", hc.ca_file));
            }
            if hc.trust && s.get("trust").map(String::as_str) != Some(bundle) {
                script += &put_inline(TRUST, bundle, "644", "root", "root");
                script += "update-ca-certificates >/dev/null 2>&1 || { echo 'update-ca-certificates failed' >&2; exit 1; }\n";
                msgs.push("add the CA to the system trust store".into());
            }
            if !script.is_empty() {
                actions.push(Action {
                    host: h.clone(),
                    run_on: None,
                    msg: msgs.join("; "),
                    script: format!("set -e\n{script}"),
                    stdin: None,
                    serial: false,
                });
            }
        }
        Ok(actions)
    }

    fn publish(&self) -> Value {
        match &self.ca {
            Some(ca) => {
                let der = x509_parser::pem::parse_x509_pem(ca.cert_pem.as_bytes())
                    .map(|(_, p)| p.contents)
                    .unwrap_or_default();
                json!({"ca_sha256": hex::encode(Sha256::digest(der)), "new_ca": self.new_ca})
            }
            None => Value::Null,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::testing::{member, with_ctx};
    use rcgen::{CertificateParams, KeyPair};

    fn host(sans: &[&str]) -> Member {
        member(
            "n1",
            json!({"sans": sans, "certs": [{"name": "etcd", "profile": "etcd"}]}),
            true,
        )
    }

    /// The probe of a host holding `key` (with that stat line) and `crt`, trusting `ca`.
    fn probe(stat: &str, key: &KeyPair, crt: &str, ca: &str) -> String {
        let csr = CertificateParams::new(vec!["provision".to_string()])
            .unwrap()
            .serialize_request(key)
            .unwrap()
            .pem()
            .unwrap();
        format!("==PROVISION key0\n{stat}\n{csr}==PROVISION crt0\n{crt}==PROVISION ca\n{ca}==PROVISION trust\n{ca}")
    }

    /// Plans one round for `m` with the CA saved in the state directory `dir`.
    fn plan(m: Member, dir: &std::path::Path, out: String) -> Result<Vec<Action>, String> {
        let state = crate::state::State::read_only(dir);
        let inv = crate::inventory::Inventory::default();
        let cx = Ctx {
            state: &state,
            inventory: &inv,
            check: false,
            new_ca: false,
        };
        let mut t = Tls::default();
        t.prepare(std::slice::from_ref(&m), &cx)?;
        t.plan(&[m], &crate::cluster::testing::seen(&[("n1", out)]), &cx)
    }

    #[test]
    fn no_ca_in_the_state_directory_while_hosts_trust_one_is_refused() {
        let m = host(&["n1", "10.0.0.1"]);
        let out = "==PROVISION ca\n-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n"
            .to_string();
        let e = with_ctx(true, |cx| {
            let mut t = Tls::default();
            t.prepare(std::slice::from_ref(&m), cx)?;
            t.plan(
                std::slice::from_ref(&m),
                &crate::cluster::testing::seen(&[("n1", out)]),
                cx,
            )
        })
        .unwrap_err();
        assert!(
            e.contains("has no CA, but n1 already hold") && e.contains("--new-ca"),
            "{e}"
        );
        // A fresh host: a CA is made (check mode: not saved) and the key made on the host.
        let a = with_ctx(true, |cx| {
            let mut t = Tls::default();
            t.prepare(std::slice::from_ref(&m), cx)?;
            t.plan(
                std::slice::from_ref(&m),
                &crate::cluster::testing::seen(&[("n1", String::new())]),
                cx,
            )
        })
        .unwrap();
        assert!(
            a[0].msg
                .starts_with("make a key and have the CA sign a etcd certificate"),
            "{}",
            a[0].msg
        );
        assert!(
            !a[0].script.contains("PRIVATE KEY"),
            "no key travels from the controller"
        );
    }

    #[test]
    fn a_certificate_is_left_alone_while_valid_and_reissued_when_its_names_change() {
        let ca = Ca::create("lab").unwrap();
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("state");
        ca.save(&crate::state::State::lock(&dir).unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let sans = vec!["10.0.0.1".to_string(), "n1".to_string()];
        let csr = CertificateParams::new(vec!["x".to_string()])
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let crt = ca
            .sign_csr(&csr, "n1", &sans, Profile::Etcd, pki::DEFAULT_DAYS)
            .unwrap();
        let out = probe("600 root root", &key, &crt, &ca.cert_pem);
        let a = plan(host(&["n1", "10.0.0.1"]), &dir, out.clone()).unwrap();
        assert!(
            a.is_empty(),
            "{:?}",
            a.iter().map(|a| &a.msg).collect::<Vec<_>>()
        );
        let a = plan(host(&["n1", "10.0.0.1", "n1.lab"]), &dir, out).unwrap();
        assert_eq!(a.len(), 1);
        assert!(
            a[0].msg.starts_with("sign a etcd certificate for n1 ("),
            "{}",
            a[0].msg
        );
        // A key readable by others is put back to 0600, and nothing else.
        let out = probe("644 root root", &key, &crt, &ca.cert_pem);
        let a = plan(host(&["n1", "10.0.0.1"]), &dir, out).unwrap();
        assert_eq!(a.len(), 1);
        assert!(a[0].script.contains("chmod 600"), "{}", a[0].script);
        assert!(!a[0].msg.contains("sign"), "{}", a[0].msg);
    }
}
