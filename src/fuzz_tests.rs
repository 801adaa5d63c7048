//! A bounded mutation fuzzer over the front ends (YAML, inventory, playbook and role
//! loading, templates): seeded from the project's own files, mutated with the tokens
//! that break parsers, each input run under `catch_unwind` with a time limit. Inputs that
//! once broke something live in tests/fixtures/fuzz/ and are replayed first.

use crate::inventory::Inventory;
use crate::play::{self, RoleSource};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const TOKENS: &[&str] = &[
    "&a ",
    "*a",
    "<<: *a\n",
    "{{ ",
    " }}",
    "{% ",
    " %}",
    "{% for x in y %}",
    "{% endfor %}",
    "- ",
    ": ",
    "[",
    "]",
    "{",
    "}",
    "!!binary ",
    "!!str ",
    "!!map ",
    "\t",
    "\"",
    "'",
    "\n  ",
    "\n",
    "~",
    "%YAML 1.2\n",
    "---\n",
    "...\n",
    "99999999999999999999999",
    "-1",
    "0x1F",
    "\u{0}",
    "\u{feff}",
    "?",
    "|",
    ">",
    "#",
    "@",
    "`",
    "\\",
    "hosts:",
    "children:",
    "vars:",
    "roles:",
    "tasks:",
    "all:",
    "{{ x | default(",
    "| to_json }}",
    "{{ range(999999999) }}",
    "loop: ",
    "when: ",
    "ansible_host: ",
    "ansible_port: ",
    "node[1:99999]",
    "[a:b:c]",
    "é",
    "\r\n",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn boundary(s: &str, i: usize) -> usize {
    let mut i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn mutate(r: &mut Rng, seed: &str) -> String {
    let mut s = seed.to_owned();
    for _ in 0..1 + r.below(4) {
        let a = boundary(&s, r.below(s.len() + 1));
        let b = boundary(&s, a + r.below(40));
        match r.below(5) {
            0 => s.replace_range(a..b, ""),
            1 => {
                let chunk = s[a..b].to_owned();
                s.insert_str(a, &chunk.repeat(1 + r.below(3)));
            }
            2 | 3 => s.insert_str(a, TOKENS[r.below(TOKENS.len())]),
            _ => {
                let lines: Vec<&str> = s.lines().collect();
                if lines.len() > 1 {
                    let (i, j) = (r.below(lines.len()), r.below(lines.len()));
                    let mut l: Vec<String> = lines.iter().map(|x| x.to_string()).collect();
                    l.swap(i, j);
                    s = l.join("\n");
                }
            }
        }
        if s.len() > 64 * 1024 {
            s.truncate(boundary(&s, 64 * 1024));
        }
    }
    s
}

/// Runs one front end on one input; Err(why) for a panic or a hang.
fn check(kind: &str, input: &str, dir: &Path) -> Result<(), String> {
    let t = Instant::now();
    let f = dir.join("input.yml");
    std::fs::write(&f, input).unwrap();
    let res = std::panic::catch_unwind(|| match kind {
        "yaml" => {
            let _ = crate::yaml::parse(input, &f);
        }
        "inventory" => {
            if let Ok(inv) = Inventory::load(&f) {
                let _ = crate::inventory::select(&inv, "all");
            }
        }
        "playbook" => {
            let roles = RoleSource {
                dir: Some(dir.join("roles")),
            };
            let _ = play::load_playbook(input, &f, &roles);
        }
        "template" => {
            let env = crate::template::environment();
            let ctx = minijinja::Value::from_serialize(serde_json::json!({"x": [1, 2], "y": "z"}));
            let _ = env.render_str(input, ctx);
        }
        _ => unreachable!(),
    });
    let took = t.elapsed();
    match res {
        Err(_) => Err(format!("{kind}: panicked")),
        Ok(()) if took > Duration::from_secs(2) => Err(format!("{kind}: took {took:?}")),
        Ok(()) => Ok(()),
    }
}

fn seeds(root: &Path) -> Vec<(&'static str, String)> {
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_default();
    let mut v = vec![
        ("inventory", read("inventory/example.yml")),
        ("inventory", read("inventory/lab.yml")),
        ("playbook", read("tests/fixtures/site.yml")),
        ("yaml", read("roles/hardening/rules.yml")),
        ("yaml", read("roles/bootstrap/tasks/main.yml")),
        (
            "template",
            read("roles/docker/templates/docker-tls.conf.j2"),
        ),
        ("template", read("templates/bootstrap/provision-managed.j2")),
    ];
    v.push((
        "playbook",
        "- hosts: all\n  roles: [r]\n  vars: { a: &x [1, 2] }\n".to_owned(),
    ));
    v.retain(|(_, s)| !s.is_empty());
    v
}

fn regression_dir(root: &Path) -> PathBuf {
    root.join("tests/fixtures/fuzz")
}

#[test]
fn front_ends_survive_mutated_input() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("roles/r/tasks")).unwrap();
    std::fs::write(
        dir.path().join("roles/r/tasks/main.yml"),
        "- name: t\n  command: { cmd: \"echo {{ a }}\" }\n",
    )
    .unwrap();
    let mut failures = Vec::new();
    // Regression inputs first: `KIND-NAME` files.
    if let Ok(rd) = std::fs::read_dir(regression_dir(root)) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let kind = name.split('-').next().unwrap_or("yaml");
            if let Ok(text) = std::fs::read_to_string(e.path()) {
                if let Err(why) = check(kind, &text, dir.path()) {
                    failures.push(format!("{name}: {why}"));
                }
            }
        }
    }
    let budget = Duration::from_secs(
        std::env::var("PROVISION_FUZZ_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20),
    );
    let seed = std::env::var("PROVISION_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234_abcd_0001u64);
    let mut r = Rng(seed);
    let seeds = seeds(root);
    let t = Instant::now();
    let mut n = 0;
    while t.elapsed() < budget && failures.len() < 5 {
        let (kind, s) = &seeds[r.below(seeds.len())];
        let input = mutate(&mut r, s);
        n += 1;
        if let Err(why) = check(kind, &input, dir.path()) {
            let keep = dir.path().join(format!("{kind}-found-{n}.yml"));
            std::fs::write(&keep, &input).unwrap();
            failures.push(format!(
                "{why} (input kept at {}; copy it to tests/fixtures/fuzz/)",
                keep.display()
            ));
            let _ = std::fs::copy(
                &keep,
                std::env::temp_dir().join(format!("provision-fuzz-{kind}-{n}.yml")),
            );
        }
    }
    eprintln!(
        "fuzz: {n} inputs in {:.1} s (seed {seed})",
        t.elapsed().as_secs_f64()
    );
    assert!(n > 100, "too few inputs tried: {n}");
    assert!(failures.is_empty(), "{failures:#?}");
}
