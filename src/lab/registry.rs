//! The lab's container registry (`lab up --registry`): Debian's docker-registry on the
//! bridge address only, with TLS from a lab CA the hosts trust, holding images built from
//! Debian packages (busybox, Prometheus, node-exporter, Alertmanager), so stacks in the
//! lab pull like real ones. Images are built once and cached; skopeo pushes them.

use super::net::GATEWAY;
use crate::sys::run;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const PORT: u16 = 5000;
/// The same images behind a user name and password (htpasswd), for registry auth tests.
pub const AUTH_PORT: u16 = 5001;
pub const AUTH_USER: &str = "lab";

/// Bumped when the way images are put together changes.
const RECIPE: u32 = 2;

/// One image: its name, Debian packages, the binary (in the package), its arguments and
/// the package's folders it needs at run time.
struct Spec {
    name: &'static str,
    pkgs: &'static [&'static str],
    bin: &'static str,
    args: &'static [&'static str],
    keep: &'static [&'static str],
}

const IMAGES: &[Spec] = &[
    Spec {
        name: "busybox",
        pkgs: &["busybox-static"],
        bin: "",
        args: &["sh"],
        keep: &[],
    },
    Spec {
        name: "prometheus",
        pkgs: &["prometheus"],
        bin: "/usr/bin/prometheus",
        args: &[
            "--config.file=/etc/prometheus/prometheus.yml",
            "--storage.tsdb.path=/prometheus",
        ],
        keep: &[],
    },
    Spec {
        name: "node-exporter",
        pkgs: &["prometheus-node-exporter"],
        bin: "/usr/bin/prometheus-node-exporter",
        args: &[],
        keep: &[],
    },
    Spec {
        name: "alertmanager",
        pkgs: &["prometheus-alertmanager"],
        bin: "/usr/bin/prometheus-alertmanager",
        args: &[
            "--config.file=/etc/alertmanager/alertmanager.yml",
            "--storage.path=/data",
        ],
        keep: &["/usr/share/prometheus/alertmanager"],
    },
];

pub fn address() -> String {
    format!("{GATEWAY}:{PORT}")
}

pub fn auth_address() -> String {
    format!("{GATEWAY}:{AUTH_PORT}")
}

/// The password of the registry that asks for one: made for each lab, kept 0600 in
/// `dir/password`, its bcrypt hash in `dir/htpasswd`.
pub fn auth_password(dir: &Path) -> Result<String> {
    let p = dir.join("password");
    if let Ok(s) = std::fs::read_to_string(&p) {
        return Ok(s.trim().to_owned());
    }
    let mut b = [0u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut b)?;
    let pw = hex::encode(b);
    let hash = bcrypt::hash(&pw, bcrypt::DEFAULT_COST)?;
    crate::sys::write_atomic(
        &dir.join("htpasswd"),
        format!("{AUTH_USER}:{hash}\n").as_bytes(),
        0o600,
    )?;
    crate::sys::write_atomic(&p, pw.as_bytes(), 0o600)?;
    Ok(pw)
}

/// The names the lab's images are pulled by, e.g. `10.200.0.1:5000/prometheus:lab`.
pub fn image_names() -> Vec<String> {
    IMAGES
        .iter()
        .map(|i| format!("{}/{}:lab", address(), i.name))
        .collect()
}

/// The CA and the registry's certificate, made fresh for each lab.
pub fn certs(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let ca = crate::pki::Ca::create("lab registry").map_err(anyhow::Error::msg)?;
    let (crt, key) = ca
        .server(&GATEWAY.to_string(), &[GATEWAY.to_string()], 365)
        .map_err(anyhow::Error::msg)?;
    crate::sys::write_atomic(&dir.join("ca.crt"), ca.cert_pem.as_bytes(), 0o644)?;
    // skopeo's cert dir takes every *.key for a client key: the CA alone, apart.
    std::fs::create_dir_all(dir.join("trust"))?;
    crate::sys::write_atomic(&dir.join("trust/ca.crt"), ca.cert_pem.as_bytes(), 0o644)?;
    crate::sys::write_atomic(&dir.join("server.crt"), crt.as_bytes(), 0o644)?;
    crate::sys::write_atomic(&dir.join("server.key"), key.as_bytes(), 0o600)?;
    Ok(())
}

/// The registry's configuration: its data in the cache, served on the bridge only; with
/// `auth`, the same data on the second port, behind the htpasswd file.
pub fn config(dir: &Path, data: &Path, auth: bool) -> Result<PathBuf> {
    let (p, addr, extra) = if auth {
        (
            dir.join("config-auth.yml"),
            auth_address(),
            format!(
                "auth:\n  htpasswd: {{ realm: provision-lab, path: {} }}\n",
                dir.join("htpasswd").display()
            ),
        )
    } else {
        (dir.join("config.yml"), address(), String::new())
    };
    let text = format!(
        "version: 0.1\nlog: {{ level: warn }}\nstorage:\n  filesystem: {{ rootdirectory: {} }}\n  delete: {{ enabled: true }}\n\
         http:\n  addr: {addr}\n  tls: {{ certificate: {}, key: {} }}\n{extra}",
        data.display(),
        dir.join("server.crt").display(),
        dir.join("server.key").display()
    );
    crate::sys::write_atomic(&p, text.as_bytes(), 0o644)?;
    Ok(p)
}

fn sha_file(p: &Path) -> Result<String> {
    let b = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
    Ok(hex::encode(Sha256::digest(&b)))
}

/// `apt-get download`, refreshing the package lists once if this machine has none yet.
fn download(dir: &Path, pkg: &str) -> Result<()> {
    let get = || {
        run(
            Command::new("apt-get")
                .args(["download", "-q", pkg])
                .current_dir(dir),
            &format!("apt-get download {pkg}"),
        )
    };
    if get().is_ok() {
        return Ok(());
    }
    run(
        Command::new("apt-get").args(["update", "-qq"]),
        "apt-get update",
    )?;
    get().map(|_| ())
}

/// Builds (or finds in the cache) one image as a docker-archive tarball.
// Long on purpose: one recipe read top to bottom (each step of the image build in order).
fn build(cache: &Path, spec: &Spec, log: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let Spec {
        name,
        pkgs,
        bin,
        args,
        keep,
    } = *spec;
    let debs = cache.join("debs");
    std::fs::create_dir_all(&debs)?;
    // The package versions name the image in the cache.
    let mut have: Vec<String> = Vec::new();
    for p in pkgs {
        let found = std::fs::read_dir(&debs)?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|f| f.starts_with(&format!("{p}_")) && f.ends_with(".deb"));
        match found {
            Some(f) => have.push(f),
            None => {
                log(&format!("lab registry: downloading {p}"));
                download(&debs, p)?;
                let f = std::fs::read_dir(&debs)?
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .find(|f| f.starts_with(&format!("{p}_")))
                    .with_context(|| format!("apt-get download {p} left no .deb"))?;
                have.push(f);
            }
        }
    }
    let key = hex::encode(
        &Sha256::digest(format!("{RECIPE} {name} {bin} {args:?} {keep:?} {have:?}").as_bytes())
            [..6],
    );
    let out = cache.join(format!("image-{name}-{key}.tar"));
    if out.exists() {
        return Ok(out);
    }
    log(&format!(
        "lab registry: building the {name} image from {}",
        have.join(", ")
    ));
    let work = tempfile::tempdir_in(cache)?;
    let (x, root) = (work.path().join("x"), work.path().join("root"));
    for d in [
        "bin",
        "etc",
        "tmp",
        "data",
        "prometheus",
        "lib/x86_64-linux-gnu",
        "lib64",
        "www",
    ] {
        std::fs::create_dir_all(root.join(d))?;
    }
    let bb = "busybox-static";
    let mut all: Vec<String> = have.clone();
    if !pkgs.contains(&bb) {
        let f = std::fs::read_dir(&debs)?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|f| f.starts_with("busybox-static_"));
        match f {
            Some(f) => all.push(f),
            None => {
                download(&debs, bb)?;
                let f = std::fs::read_dir(&debs)?
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .find(|f| f.starts_with("busybox-static_"))
                    .context("apt-get download busybox-static left no .deb")?;
                all.push(f);
            }
        }
    }
    for f in &all {
        run(
            Command::new("dpkg").arg("-x").arg(debs.join(f)).arg(&x),
            &format!("dpkg -x {f}"),
        )?;
    }
    std::fs::copy(x.join("bin/busybox"), root.join("bin/busybox"))?;
    for a in ["sh", "nc", "cat", "ls", "sleep", "httpd", "echo"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a))?;
    }
    if !bin.is_empty() {
        let target = root
            .join("bin")
            .join(Path::new(bin).file_name().unwrap_or_default());
        std::fs::copy(x.join(bin.trim_start_matches('/')), &target)?;
        // Its shared libraries, as this (Debian) machine resolves them.
        let ldd = Command::new("ldd").arg(&target).output()?;
        for l in String::from_utf8_lossy(&ldd.stdout).lines() {
            let path = l
                .split("=>")
                .nth(1)
                .unwrap_or(l)
                .split_whitespace()
                .next()
                .unwrap_or("");
            if path.starts_with('/') {
                let dest = root.join(path.trim_start_matches('/'));
                std::fs::create_dir_all(dest.parent().unwrap_or(&root))?;
                std::fs::copy(path, &dest).with_context(|| format!("copying {path}"))?;
            }
        }
    }
    for k in keep {
        let dest = root.join(k.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().unwrap_or(&root))?;
        run(
            Command::new("cp")
                .arg("-a")
                .arg(x.join(k.trim_start_matches('/')))
                .arg(&dest),
            &format!("copying {k} into the {name} image"),
        )?;
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )?;
    std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    std::fs::write(root.join("etc/nsswitch.conf"), "hosts: files dns\n")?;
    let layer = work.path().join("layer.tar");
    run(
        Command::new("tar")
            .args(["--owner=0", "--group=0", "--numeric-owner", "-C"])
            .arg(&root)
            .arg("-cf")
            .arg(&layer)
            .arg("."),
        "tar of the image layer",
    )?;
    let diff = sha_file(&layer)?;
    let entry: Vec<String> = if bin.is_empty() {
        Vec::new()
    } else {
        vec![format!(
            "/bin/{}",
            Path::new(bin)
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
        )]
    };
    let cfg = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": if entry.is_empty() { serde_json::Value::Null } else { serde_json::json!(entry) },
            "Cmd": args,
            "Env": ["PATH=/bin"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff}")]},
        "history": [{"created_by": format!("provision lab: {}", have.join(" "))}],
    });
    let cfg_text = serde_json::to_vec(&cfg)?;
    let cfg_name = format!("{}.json", hex::encode(Sha256::digest(&cfg_text)));
    std::fs::write(work.path().join(&cfg_name), &cfg_text)?;
    let manifest = serde_json::json!([{
        "Config": cfg_name,
        "RepoTags": [format!("{}/{name}:lab", address())],
        "Layers": ["layer.tar"],
    }]);
    std::fs::write(
        work.path().join("manifest.json"),
        serde_json::to_vec(&manifest)?,
    )?;
    let tmp = out.with_extension("tmp");
    run(
        Command::new("tar")
            .arg("-C")
            .arg(work.path())
            .arg("-cf")
            .arg(&tmp)
            .args(["manifest.json", &cfg_name, "layer.tar"]),
        "tar of the image",
    )?;
    std::fs::rename(&tmp, &out)?;
    Ok(out)
}

/// Builds what is missing and pushes every image to the running registry.
pub fn push_images(cache: &Path, certs: &Path, log: &mut dyn FnMut(&str)) -> Result<()> {
    let cache = cache.join("registry-images");
    std::fs::create_dir_all(&cache)?;
    for spec in IMAGES {
        let tar = build(&cache, spec, log)?;
        let name = spec.name;
        let dest = format!("docker://{}/{name}:lab", address());
        let o = Command::new("skopeo")
            .args(["copy", "-q", "--dest-cert-dir"])
            .arg(certs.join("trust"))
            .arg(format!("docker-archive:{}", tar.display()))
            .arg(&dest)
            .output()
            .context("running skopeo")?;
        if !o.status.success() {
            bail!(
                "skopeo could not push {name} to the lab registry: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
    }
    Ok(())
}

/// Something else answering on the registry's port (Debian's docker-registry service
/// listens on every address) would take the lab's pushes: refused with what to do.
pub fn port_free() -> Result<()> {
    for a in [address(), auth_address()] {
        let addr: std::net::SocketAddr = a.parse()?;
        if std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(300))
            .is_ok()
        {
            bail!(
            "{a} is taken (Debian's docker-registry service?): stop it with \
             `systemctl disable --now docker-registry`, then run `provision lab up --registry` again"
        );
        }
    }
    Ok(())
}

/// Waits until the registry accepts connections.
pub fn wait_up(a: &str, secs: u64) -> Result<()> {
    let t = std::time::Instant::now();
    let addr: std::net::SocketAddr = a.parse()?;
    while t.elapsed().as_secs() < secs {
        if std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200))
            .is_ok()
        {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    bail!("the lab registry did not answer on {a} within {secs} s (see its log in the lab folder)")
}
