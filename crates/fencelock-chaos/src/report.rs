//! The scenario table, as Markdown, for `docs/reliability.md` and the terminal.

use crate::history::Res;
use crate::scenario::Outcome;

/// One Markdown table row per outcome, with a header.
pub fn table(outcomes: &[Outcome]) -> String {
    let mut s = String::from(
        "| scenario | fault | workload | grants | violations expected (flagged) | unexpected | stale writes rejected (fenced) | lost updates fenced / unfenced | ledger delta fenced / unfenced | recovery after heal | longest worker stall |\n|---|---|---|---:|---|---|---:|---|---|---:|---:|\n",
    );
    for o in outcomes {
        let st = &o.findings.stats;
        let expected: Vec<String> = o
            .scenario
            .expect
            .iter()
            .map(|k| {
                let mark = if o.findings.get(*k).is_some() {
                    "✔"
                } else {
                    "✘ MISSED"
                };
                format!("{k} {mark}")
            })
            .collect();
        let unexpected: Vec<String> = o
            .unexpected
            .iter()
            .map(|v| format!("**{} ×{}**", v.kind, v.count))
            .collect();
        let get = |m: &std::collections::BTreeMap<Res, i64>, r| m.get(&r).copied().unwrap_or(0);
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} / {} | {:+} / {:+} | {} | {:.0} ms |\n",
            o.scenario.name,
            o.scenario.fault,
            o.scenario.workload(),
            st.grants,
            if expected.is_empty() {
                "none".into()
            } else {
                expected.join(", ")
            },
            if unexpected.is_empty() {
                "none".into()
            } else {
                unexpected.join(", ")
            },
            st.stale_writes_rejected,
            get(&st.lost_updates, Res::F),
            get(&st.lost_updates, Res::U),
            get(&st.ledger_delta, Res::F),
            get(&st.ledger_delta, Res::U),
            st.recovery_ms
                .map_or_else(|| "n/a".to_string(), |r| format!("{r:.0} ms")),
            st.longest_stall_ms,
        ));
    }
    s
}
