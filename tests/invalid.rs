//! Malformed inventories and playbooks: each is rejected before any connection, with an
//! error that names the place and says what is wrong. No panics.

mod common;
use common::*;

/// (inventory, playbook or "", expected location "file:line", expected words)
const CASES: &[(&str, &str, &str, &str)] = &[
    ("all:\n  hosts:\n    a: {ansible_host: 10.0.0.1\n", "", "inv.yml:", "invalid YAML"),
    ("", "", "inv.yml:1", "defines no hosts"),
    ("- a\n- b\n", "", "inv.yml:1:3", "must be a mapping"),
    ("all:\n  hostz:\n    a:\n", "", "inv.yml:2:3", "did you mean `hosts`"),
    ("all:\n  hosts:\n    - a\n    - b\n", "", "inv.yml:3:7", "not `- name`"),
    ("all:\n  hosts:\n    a:\n      ansible_hots: 1.2.3.4\n", "", "inv.yml:4:7", "did you mean `ansible_host`"),
    ("all:\n  hosts:\n    a:\n      ansible_port: 70000\n", "", "inv.yml:3:5", "1 to 65535"),
    ("all:\n  hosts:\n    a:\n      ansible_port: [22]\n", "", "inv.yml:3:5", "must be a number"),
    ("all:\n  hosts:\n    a:\n      ansible_host: 10.0.0.1\n    b:\n      ansible_host: 10.0.0.1\n", "", "inv.yml:5:5", "both use address"),
    ("all:\n  children:\n    g1:\n      children:\n        g2:\n    g2:\n      children:\n        g1:\n", "", "inv.yml:", "cycle"),
    ("all:\n  hosts:\n    a:\n      ansible_become: maybe\n", "", "inv.yml:3:5", "true or false"),
    ("all:\n  hosts:\n    'bad name':\n", "", "inv.yml:3:5", "invalid host name"),
    ("all:\n  hosts:\n    a:\n      1var: x\n", "", "inv.yml:4:7", "invalid variable name"),
    ("all:\n  hosts:\n    a:\n  vars: [1, 2]\n", "", "inv.yml:4:10", "must be a mapping"),
    ("all:\n  hosts:\n    a:\n      ansible_connection: winrm\n", "", "inv.yml:3:5", "only speaks ssh"),
    ("all:\n  children:\n    all:\n", "", "inv.yml:3:5", "cannot be a child"),
    ("all:\n  hosts:\n    a:\n  children:\n    web: [a]\n", "", "inv.yml:5:11", "must be a mapping"),
    ("all:\n  hosts:\n    a:\n      ansible_host: ''\n", "", "inv.yml:3:5", "not a valid address"),
    ("all:\n  hosts:\n    a:\n      ansible_host: 999.1.1.1\n", "", "inv.yml:3:5", "not a valid address: `999.1.1.1`"),
    ("all:\n  hosts:\n    a:\n      ansible_host: web..lan\n", "", "inv.yml:3:5", "not a valid address"),
    ("all:\n  hosts:\n    a:\n      ansible_host: 10.0.0.1\n    a:\n", "", "inv.yml:5:5", "key `a` appears twice"),
    ("all:\n  vars:\n    x: 1\n    x: 2\n  hosts:\n    a:\n", "", "inv.yml:4:5", "first on line 3"),
    ("all:\n  hosts:\n    web[3:1]:\n", "", "inv.yml:3:5", "invalid host range"),
    ("all:\n  hosts:\n    web[01:\n", "", "inv.yml:3:5", "without `]`"),
    ("all:\n  hosts:\n    a:\n      ansible_ssh_private_key_file: /nonexistent/key\n", "", "inv.yml:3:5", "does not exist"),
    ("all:\n  hosts:\n    a:\n      ansible_ssh_common_args: -J u@h:port\n", "", "inv.yml:3:5", "bad port in ProxyJump"),
    ("all:\n  hosts:\n    a:\n      hardening_disabled: [ssh-rot-login]\n", "", "inv.yml:3:5", "did you mean `ssh-root-login`"),
    ("all:\n  hosts:\n    a:\n      ansible_user: admin\n      hardening_ssh_allow_users: [ops]\n", "", "inv.yml:3:5", "does not let `admin`"),
    ("all:\n  hosts:\n    a:\n      ansible_user: root\n", "", "inv.yml:3:5", "provision connects as root"),
    // Playbooks.
    (OK_INV, "hosts: all\n", "site.yml:1:1", "list of plays"),
    (OK_INV, "[]\n", "site.yml:1:1", "no plays"),
    (OK_INV, "- roles: [bootstrap]\n", "site.yml:1:3", "no `hosts`"),
    (OK_INV, "- hosts: all\n  rolez: [bootstrap]\n", "site.yml:2:3", "did you mean `roles`"),
    (OK_INV, "- hosts: all\n  roles: [bootstrp]\n", "site.yml:2:11", "did you mean `bootstrap`"),
    (OK_INV, "- hosts: nosuch\n  roles: [bootstrap]\n", "site.yml:1:3", "neither a host nor a group"),
    (OK_INV, "- hosts: all\n  roles: common\n", "site.yml:2:10", "roles must be a list"),
    (OK_INV, "- hosts: all\n  roles: [t]\n", "tasks/main.yml:2:3", "did you mean `copy`"),
    (OK_INV, "- hosts: all\n  roles: [t2]\n", "tasks/main.yml:1:3", "names no module"),
    (OK_INV, "- hosts: all\n  roles: [t3]\n", "tasks/main.yml:2:5", "did you mean `dest`"),
    (OK_INV, "- hosts: all\n  roles: [t4]\n", "tasks/main.yml:2:5", "needs `dest`"),
    (OK_INV, "- hosts: all\n  roles: [t5]\n", "tasks/main.yml:2:3", "two modules"),
    (OK_INV, "- hosts: all\n  roles: [t6]\n", "tasks/main.yml:2:10", "template `missing.j2` not found"),
    (OK_INV, "- hosts: all\n  roles: [t7]\n", "tasks/main.yml:1:3", "no handler"),
    (OK_INV, "- hosts: all\n  become: sometimes\n  roles: [bootstrap]\n", "site.yml:2:11", "true or false"),
    (OK_INV, "---\n- hosts: all\n---\n- hosts: all\n", "site.yml:", "more than one YAML document"),
    (OK_INV, "- hosts: all\n  roles: [t8]\n", "tasks/main.yml:1:10", "exactly one of `content` and `src`"),
    (OK_INV, "- hosts: all\n  roles: [t9]\n", "tasks/main.yml:1:25", "file `nope.txt` not found"),
    (OK_INV, "- hosts: all\n  roles: [t10]\n", "tasks/main.yml:3:3", "key `copy` appears twice"),
    (OK_INV, "- hosts: all\n  roles: [t11]\n", "tasks/main.yml:2:13", "`throttle` must be a positive number"),
];

const OK_INV: &str = "all:\n  hosts:\n    a:\n      ansible_host: 192.0.2.10\n";

const ROLES: &[(&str, &str)] = &[
    (
        "t/tasks/main.yml",
        "- name: typo\n  cpy: {dest: /x, content: y}\n",
    ),
    ("t2/tasks/main.yml", "- name: nothing\n  become: true\n"),
    (
        "t3/tasks/main.yml",
        "- copy:\n    dst: /x\n    content: y\n",
    ),
    ("t4/tasks/main.yml", "- copy:\n    content: y\n"),
    (
        "t5/tasks/main.yml",
        "- copy: {dest: /x, content: y}\n  file: {path: /x}\n",
    ),
    (
        "t6/tasks/main.yml",
        "- template:\n    src: missing.j2\n    dest: /x\n",
    ),
    (
        "t7/tasks/main.yml",
        "- copy: {dest: /x, content: y}\n  notify: restart it\n",
    ),
    (
        "t8/tasks/main.yml",
        "- copy: {dest: /x, content: y, src: z}\n",
    ),
    ("t9/tasks/main.yml", "- copy: {dest: /x, src: nope.txt}\n"),
    (
        "t10/tasks/main.yml",
        "- name: twice\n  copy: {dest: /x, content: y}\n  copy: {dest: /z, content: y}\n",
    ),
    (
        "t11/tasks/main.yml",
        "- copy: {dest: /x, content: y}\n  throttle: 0\n",
    ),
];

#[test]
fn malformed_input_is_rejected_with_a_location_before_any_connection() {
    let dir = tempfile::tempdir().unwrap();
    let roles = dir.path().join("roles");
    for (path, text) in ROLES {
        let p = roles.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    assert!(CASES.len() >= 30);
    let mut failures = Vec::new();
    for (i, (inv, play, loc, words)) in CASES.iter().enumerate() {
        let inv_path = dir.path().join("inv.yml");
        std::fs::write(&inv_path, inv).unwrap();
        let mut args = vec![
            inv_path.to_str().unwrap().to_owned(),
            "--roles".into(),
            roles.to_str().unwrap().into(),
        ];
        if !play.is_empty() {
            let p = dir.path().join("site.yml");
            std::fs::write(&p, play).unwrap();
            args.extend(["-p".into(), p.to_str().unwrap().into()]);
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = provision(&argv);
        let out = text(&o);
        let ok = o.status.code() == Some(4)
            && out.contains(loc)
            && out.contains(words)
            && out.contains("no host was contacted")
            && !out.contains("panicked");
        if !ok {
            failures.push(format!(
                "case {i}: want exit 4, `{loc}` and `{words}`; got {:?}:\n{out}",
                o.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn limit_patterns_select_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inv.yml");
    std::fs::write(&inv, "all:\n  vars:\n    ansible_user: admin\n  children:\n    managers:\n      hosts:\n        m1: {ansible_host: 192.0.2.1}\n        m2: {ansible_host: 192.0.2.2}\n    workers:\n      hosts:\n        w1: {ansible_host: 192.0.2.3}\n        m2:\n").unwrap();
    let i = inv.to_str().unwrap();
    let hosts = |limit: &str| {
        String::from_utf8_lossy(&provision(&[i, "--list-hosts", "--limit", limit]).stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(hosts("managers"), ["m1", "m2"]);
    assert_eq!(hosts("managers:&workers"), ["m2"]);
    assert_eq!(hosts("all:!m1"), ["m2", "w1"]);
    assert_eq!(hosts("m*"), ["m1", "m2"]);
    assert_eq!(hosts("w1,m1"), ["m1", "w1"]);
    let ranged = dir.path().join("ranged.yml");
    std::fs::write(&ranged, "all:\n  vars: {ansible_user: admin}\n  children:\n    web:\n      hosts:\n        web[08:10].lan:\n          role: front\n").unwrap();
    let o = provision(&[ranged.to_str().unwrap(), "--list-hosts", "--limit", "web"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["web08.lan", "web09.lan", "web10.lan"],
        "{}",
        text(&o)
    );
    // --list-hosts validates the whole inventory too: a bad address is refused.
    let bad = dir.path().join("bad.yml");
    std::fs::write(
        &bad,
        "all:\n  hosts:\n    m1:\n      ansible_host: 999.1.1.1\n",
    )
    .unwrap();
    let o = provision(&[bad.to_str().unwrap(), "--list-hosts"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(
        text(&o).contains("bad.yml:3:5") && o.stdout.is_empty(),
        "{}",
        text(&o)
    );
    let o = provision(&[i, "--list-hosts", "--limit", "managerz"]);
    assert_eq!(o.status.code(), Some(4));
    assert!(text(&o).contains("did you mean `managers`"), "{}", text(&o));
}
