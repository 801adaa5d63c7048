//! A planned CA rotation, kept in the state directory so an interrupted one goes on where
//! it stopped. Three runs, each over the whole cluster:
//! 1. `trust`: every host trusts the old and the new CA (etcd restarted one member at a time);
//!    certificates stay as they are.
//! 2. `reissue`: every certificate is reissued by the new CA; both CAs still trusted.
//! 3. `retire`: the new CA becomes the state directory's `ca.crt`; hosts trust it alone.

use super::{Ca, CA_CERT, CA_KEY};
use crate::state::State;

pub const MARK: &str = "ca.rotation";
pub const NEXT_CERT: &str = "ca.next.crt";
pub const NEXT_KEY: &str = "ca.next.key";
/// The CA being retired (its certificate only: the key is gone once the new CA signs).
pub const OLD_CERT: &str = "ca.old.crt";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Trust,
    Reissue,
    Retire,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Trust => "trust",
            Phase::Reissue => "reissue",
            Phase::Retire => "retire",
        }
    }

    pub fn number(self) -> usize {
        match self {
            Phase::Trust => 1,
            Phase::Reissue => 2,
            Phase::Retire => 3,
        }
    }

    pub fn what(self) -> &'static str {
        match self {
            Phase::Trust => "every host trusts both CAs",
            Phase::Reissue => "every certificate reissued by the new CA",
            Phase::Retire => "the old CA removed from every host",
        }
    }

    fn parse(s: &str) -> Option<Phase> {
        match s.trim() {
            "trust" => Some(Phase::Trust),
            "reissue" => Some(Phase::Reissue),
            "retire" => Some(Phase::Retire),
            _ => None,
        }
    }
}

/// The rotation under way, if any.
pub fn phase(state: &State) -> Result<Option<Phase>, String> {
    let Some(b) = state.read(MARK) else {
        return Ok(None);
    };
    let s = String::from_utf8_lossy(&b);
    Phase::parse(&s).map(Some).ok_or_else(|| {
        format!(
            "{}/{MARK} says `{}`, not trust, reissue or retire: restore the state directory from your backup",
            state.dir.display(),
            s.trim()
        )
    })
}

/// The CA that signs certificates now and the certificates hosts must trust (one PEM
/// bundle, older CA first).
pub struct Trust {
    pub signer: Ca,
    pub bundle: String,
}

/// What the state directory says the hosts must trust and which CA signs; None when it
/// has no CA yet.
pub fn trust(state: &State) -> Result<Option<Trust>, String> {
    let Some(cur) = Ca::load(state)? else {
        return Ok(None);
    };
    let next = || {
        Ca::load_pair(state, NEXT_CERT, NEXT_KEY)?.ok_or_else(|| {
            format!(
                "a CA rotation is under way but {}/{NEXT_CERT} is missing: restore it from your backup",
                state.dir.display()
            )
        })
    };
    Ok(Some(match phase(state)? {
        None | Some(Phase::Retire) => Trust {
            bundle: cur.cert_pem.clone(),
            signer: cur,
        },
        Some(Phase::Trust) => {
            let n = next()?;
            Trust {
                bundle: cur.cert_pem.clone() + &n.cert_pem,
                signer: cur,
            }
        }
        Some(Phase::Reissue) => {
            let n = next()?;
            Trust {
                bundle: cur.cert_pem.clone() + &n.cert_pem,
                signer: n,
            }
        }
    }))
}

/// The sha256 of every CA file a host may hold while the state directory is as it is (the
/// rotation's bundles included): anything else is another CA, refused.
pub fn accepted_pins(state: &State) -> Vec<String> {
    let sha = |b: &[u8]| crate::probe::sha256_hex(b);
    let Some(cur) = state.read(CA_CERT) else {
        return Vec::new();
    };
    let mut pins = vec![sha(&cur)];
    if let Some(next) = state.read(NEXT_CERT) {
        pins.push(sha(&[cur.clone(), next].concat()));
    }
    if let Some(old) = state.read(OLD_CERT) {
        pins.push(sha(&old));
        pins.push(sha(&[old, cur].concat()));
    }
    pins
}

/// Starts a rotation (a new CA beside the current one) or says which phase is under way.
pub fn begin(state: &State, name: &str) -> Result<Phase, String> {
    if let Some(p) = phase(state)? {
        return Ok(p);
    }
    if Ca::load(state)?.is_none() {
        return Err(format!(
            "{} has no CA to rotate: a first run makes one",
            state.dir.display()
        ));
    }
    let next = Ca::create(name)?;
    next.save_pair(state, NEXT_CERT, NEXT_KEY)?;
    state.write(MARK, b"trust\n", 0o644)?;
    Ok(Phase::Trust)
}

/// After a phase's run succeeded on every host: the next phase, or None when done.
pub fn advance(state: &State, done: Phase) -> Result<Option<Phase>, String> {
    match done {
        Phase::Trust => {
            state.write(MARK, b"reissue\n", 0o644)?;
            Ok(Some(Phase::Reissue))
        }
        Phase::Reissue => {
            let cur = state
                .read(CA_CERT)
                .ok_or_else(|| format!("{}/{CA_CERT} is gone", state.dir.display()))?;
            let Some(next) = Ca::load_pair(state, NEXT_CERT, NEXT_KEY)? else {
                return Err(format!(
                    "{}/{NEXT_CERT} is gone: restore it from your backup",
                    state.dir.display()
                ));
            };
            // Order matters for a crash in between: the old certificate is kept first, the
            // new CA then takes the place of the old one, the marker moves last.
            state.write(OLD_CERT, &cur, 0o644)?;
            next.save_pair(state, CA_CERT, CA_KEY)?;
            state.remove(NEXT_CERT)?;
            state.remove(NEXT_KEY)?;
            state.write(MARK, b"retire\n", 0o644)?;
            Ok(Some(Phase::Retire))
        }
        Phase::Retire => {
            state.remove(OLD_CERT)?;
            state.remove(MARK)?;
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_goes_through_three_phases_and_pins_every_bundle_on_the_way() {
        let d = tempfile::tempdir().unwrap();
        let st = State::lock(d.path()).unwrap();
        assert!(begin(&st, "t").is_err(), "no CA yet: nothing to rotate");
        let old = Ca::create("old").unwrap();
        old.save(&st).unwrap();
        assert_eq!(phase(&st).unwrap(), None);
        assert_eq!(trust(&st).unwrap().unwrap().bundle, old.cert_pem);

        assert_eq!(begin(&st, "t").unwrap(), Phase::Trust);
        // begun twice: the same rotation, not a second new CA
        let next_pem = String::from_utf8(st.read(NEXT_CERT).unwrap()).unwrap();
        assert_eq!(begin(&st, "t").unwrap(), Phase::Trust);
        assert_eq!(st.read(NEXT_CERT).unwrap(), next_pem.as_bytes());
        let t = trust(&st).unwrap().unwrap();
        assert_eq!(t.signer.cert_pem, old.cert_pem);
        assert_eq!(t.bundle, old.cert_pem.clone() + &next_pem);
        let sha = |s: &str| crate::probe::sha256_hex(s.as_bytes());
        let pins = accepted_pins(&st);
        assert!(pins.contains(&sha(&old.cert_pem)) && pins.contains(&sha(&t.bundle)));

        assert_eq!(advance(&st, Phase::Trust).unwrap(), Some(Phase::Reissue));
        let t = trust(&st).unwrap().unwrap();
        assert_eq!(t.signer.cert_pem, next_pem, "the new CA signs");

        assert_eq!(advance(&st, Phase::Reissue).unwrap(), Some(Phase::Retire));
        let t = trust(&st).unwrap().unwrap();
        assert_eq!(t.signer.cert_pem, next_pem);
        assert_eq!(t.bundle, next_pem, "the new CA alone");
        let pins = accepted_pins(&st);
        assert!(pins.contains(&sha(&(old.cert_pem.clone() + &next_pem))));

        assert_eq!(advance(&st, Phase::Retire).unwrap(), None);
        assert_eq!(phase(&st).unwrap(), None);
        assert_eq!(
            accepted_pins(&st),
            vec![sha(&next_pem)],
            "the old CA is refused now"
        );
        assert!(st.read(NEXT_KEY).is_none() && st.read(OLD_CERT).is_none());
    }

    #[test]
    fn a_damaged_marker_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let st = State::lock(d.path()).unwrap();
        Ca::create("x").unwrap().save(&st).unwrap();
        st.write(MARK, b"sideways\n", 0o644).unwrap();
        assert!(trust(&st).is_err());
        st.write(MARK, b"reissue\n", 0o644).unwrap();
        assert!(trust(&st).err().unwrap().contains(NEXT_CERT));
    }
}
