//! The order of services: `requires` (start those first; pulled in by a start) and
//! `after` (order only). Pure functions over definitions, tested as tables.

use std::collections::{BTreeMap, BTreeSet};

use super::Service;

/// The edges of one service: what must start before it.
fn before(svc: &Service) -> impl Iterator<Item = &String> {
    svc.settings
        .requires
        .iter()
        .chain(svc.settings.after.iter())
}

/// A dependency cycle among `services`, as `a -> b -> a`, if there is one. Names not
/// defined are ignored (a start reports them).
pub fn find_cycle(services: &[Service]) -> Option<String> {
    let by_name: BTreeMap<&str, &Service> = services.iter().map(|s| (s.name.as_str(), s)).collect();
    // 0 unvisited, 1 on the current path, 2 done.
    let mut mark: BTreeMap<&str, u8> = BTreeMap::new();
    let mut path: Vec<&str> = Vec::new();
    fn visit<'a>(
        n: &'a str,
        by_name: &BTreeMap<&'a str, &'a Service>,
        mark: &mut BTreeMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
    ) -> Option<String> {
        match mark.get(n).copied().unwrap_or(0) {
            2 => return None,
            1 => {
                let from = path.iter().position(|p| *p == n).expect("on the path");
                let mut cycle: Vec<&str> = path[from..].to_vec();
                cycle.push(n);
                return Some(cycle.join(" -> "));
            }
            _ => {}
        }
        let svc = by_name.get(n)?;
        mark.insert(n, 1);
        path.push(n);
        for d in before(svc) {
            if let Some(c) = visit(d, by_name, mark, path) {
                return Some(c);
            }
        }
        path.pop();
        mark.insert(n, 2);
        None
    }
    for s in services {
        if let Some(c) = visit(&s.name, &by_name, &mut mark, &mut path) {
            return Some(c);
        }
    }
    None
}

/// The services to start for `names`, requirements first: `names` and everything they
/// require (transitively), ordered so each comes after what it requires and what it is
/// `after` (when that is started too). Ties keep the order of `names`, then by name.
/// Names not defined stay in the list (the start reports them). Assumes no cycle; one
/// that slipped in is broken at an arbitrary point rather than looping.
pub fn start_order(services: &[Service], names: &[String]) -> Vec<String> {
    let by_name: BTreeMap<&str, &Service> = services.iter().map(|s| (s.name.as_str(), s)).collect();
    // Close over `requires`.
    let mut wanted: Vec<String> = Vec::new();
    let mut stack: Vec<String> = names.iter().rev().cloned().collect();
    while let Some(n) = stack.pop() {
        if wanted.contains(&n) {
            continue;
        }
        if let Some(s) = by_name.get(n.as_str()) {
            for r in s.settings.requires.iter().rev() {
                stack.push(r.clone());
            }
        }
        wanted.push(n);
    }
    order(&by_name, &wanted)
}

/// `names` ordered so each comes after what it requires or is `after`, among `names`.
pub fn order_among(services: &[Service], names: &[String]) -> Vec<String> {
    let by_name: BTreeMap<&str, &Service> = services.iter().map(|s| (s.name.as_str(), s)).collect();
    order(&by_name, names)
}

fn order(by_name: &BTreeMap<&str, &Service>, names: &[String]) -> Vec<String> {
    let set: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut visiting: BTreeSet<&str> = BTreeSet::new();
    let mut out = Vec::with_capacity(names.len());
    fn visit<'a>(
        n: &'a str,
        by_name: &BTreeMap<&str, &'a Service>,
        set: &BTreeSet<&str>,
        done: &mut BTreeSet<&'a str>,
        visiting: &mut BTreeSet<&'a str>,
        out: &mut Vec<String>,
    ) {
        if done.contains(n) || !visiting.insert(n) {
            return;
        }
        if let Some(s) = by_name.get(n) {
            for d in before(s) {
                if set.contains(d.as_str()) {
                    visit(d, by_name, set, done, visiting, out);
                }
            }
        }
        visiting.remove(n);
        done.insert(n);
        out.push(n.to_string());
    }
    for n in names {
        visit(n, by_name, &set, &mut done, &mut visiting, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{Defaults, SettingChanges};

    fn svc(name: &str, requires: &[&str], after: &[&str]) -> Service {
        let mut settings = SettingChanges::default().build(&Defaults {
            cwd: "/".into(),
            log: "/l".into(),
        });
        settings.requires = requires.iter().map(|s| s.to_string()).collect();
        settings.after = after.iter().map(|s| s.to_string()).collect();
        Service {
            name: name.into(),
            argv: vec!["true".into()],
            env: Default::default(),
            settings,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn cycles_are_named() {
        let ok = [
            svc("a", &["b"], &[]),
            svc("b", &[], &["c"]),
            svc("c", &[], &[]),
        ];
        assert_eq!(find_cycle(&ok), None);
        let bad = [
            svc("a", &["b"], &[]),
            svc("b", &[], &["c"]),
            svc("c", &["a"], &[]),
        ];
        assert_eq!(find_cycle(&bad).as_deref(), Some("a -> b -> c -> a"));
        assert_eq!(
            find_cycle(&[svc("s", &["s"], &[])]).as_deref(),
            Some("s -> s")
        );
        // A name nobody defines is no cycle.
        assert_eq!(find_cycle(&[svc("a", &["ghost"], &[])]), None);
    }

    #[test]
    fn start_order_pulls_requirements_first() {
        let all = [
            svc("api", &["db"], &["cache"]),
            svc("cache", &[], &[]),
            svc("db", &["disk"], &[]),
            svc("disk", &[], &[]),
            svc("web", &[], &["api"]),
        ];
        // `after` does not pull cache in; `requires` pulls db and disk.
        assert_eq!(
            start_order(&all, &names(&["api"])),
            names(&["disk", "db", "api"])
        );
        assert_eq!(
            start_order(&all, &names(&["web", "cache", "api"])),
            names(&["disk", "db", "cache", "api", "web"])
        );
        assert_eq!(
            order_among(&all, &names(&["api", "cache", "db", "disk", "web"])),
            names(&["disk", "db", "cache", "api", "web"])
        );
    }
}
