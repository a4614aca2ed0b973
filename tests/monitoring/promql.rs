//! A small PromQL reader, enough to find metric selectors, grouping labels and matchers, and
//! the checks of an expression against a `/metrics` exposition.

use super::*;

// ---------------------------------------------------------------------------------------
// A small PromQL reader: enough to find metric selectors and grouping labels.

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Ident(String),
    Str(String),
    Op(String),
    Num,
    Range,
}

pub(crate) fn tokens(expr: &str) -> Vec<Tok> {
    let cs: Vec<char> = expr.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < cs.len() {
        let c = cs[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '#' {
            while i < cs.len() && cs[i] != '\n' {
                i += 1;
            }
        } else if c == '"' || c == '\'' || c == '`' {
            let mut s = String::new();
            i += 1;
            while cs[i] != c {
                if cs[i] == '\\' && c != '`' {
                    i += 1;
                }
                s.push(cs[i]);
                i += 1;
            }
            i += 1;
            out.push(Tok::Str(s));
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < cs.len() && (cs[i].is_ascii_alphanumeric() || cs[i] == '_' || cs[i] == ':') {
                i += 1;
            }
            out.push(Tok::Ident(cs[start..i].iter().collect()));
        } else if c.is_ascii_digit() || c == '.' {
            while i < cs.len() && (cs[i].is_ascii_alphanumeric() || cs[i] == '.') {
                i += 1;
            }
            out.push(Tok::Num);
        } else if c == '[' {
            while cs[i] != ']' {
                i += 1;
            }
            i += 1;
            out.push(Tok::Range);
        } else {
            let two: String = cs[i..(i + 2).min(cs.len())].iter().collect();
            if ["=~", "!~", "!=", "==", ">=", "<="].contains(&two.as_str()) {
                out.push(Tok::Op(two));
                i += 2;
            } else {
                out.push(Tok::Op(c.to_string()));
                i += 1;
            }
        }
    }
    out
}

#[derive(Debug, Clone)]
pub(crate) struct Selector {
    pub(crate) metric: String,
    pub(crate) matchers: Vec<(String, String, String)>,
}

impl Selector {
    pub(crate) fn promql(&self) -> String {
        let m: Vec<String> = self
            .matchers
            .iter()
            .map(|(l, op, v)| format!("{l}{op}{}", json!(v)))
            .collect();
        format!("{}{{{}}}", self.metric, m.join(", "))
    }
}

#[derive(Debug, Default)]
pub(crate) struct Parsed {
    pub(crate) selectors: Vec<Selector>,
    pub(crate) by: Vec<String>,
    pub(crate) without: Vec<String>,
    /// `on(...)`, `ignoring(...)`, `group_left(...)`, `group_right(...)`.
    pub(crate) matching: Vec<String>,
    pub(crate) has_by: bool,
    /// Identifiers that are neither functions, keywords nor `gatehouse_` metrics.
    pub(crate) unknown: Vec<String>,
}

/// Binary operators and modifiers, and the aggregations (which `by`/`without` may follow
/// before their parenthesis).
pub(crate) const KEYWORDS: [&str; 20] = [
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    "atan2",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];

pub(crate) fn parse(expr: &str) -> Parsed {
    let t = tokens(expr);
    let mut p = Parsed::default();
    let mut i = 0;
    let label_list = |i: &mut usize| -> Vec<String> {
        let mut out = Vec::new();
        if t.get(*i) != Some(&Tok::Op("(".into())) {
            return out;
        }
        *i += 1;
        while let Some(tok) = t.get(*i) {
            *i += 1;
            match tok {
                Tok::Ident(l) => out.push(l.clone()),
                Tok::Op(o) if o == "," => {}
                Tok::Op(o) if o == ")" => break,
                other => panic!("unexpected {other:?} in a label list of {expr}"),
            }
        }
        out
    };
    while i < t.len() {
        match &t[i] {
            Tok::Ident(word) => {
                i += 1;
                let call = t.get(i) == Some(&Tok::Op("(".into()));
                match word.as_str() {
                    "by" => {
                        p.has_by = true;
                        p.by.extend(label_list(&mut i));
                    }
                    "without" => p.without.extend(label_list(&mut i)),
                    "on" | "ignoring" | "group_left" | "group_right" => {
                        p.matching.extend(label_list(&mut i))
                    }
                    _ if call => {}
                    w if KEYWORDS.contains(&w) => {}
                    w if w.starts_with("gatehouse_") => {
                        let mut s = Selector {
                            metric: w.to_string(),
                            matchers: Vec::new(),
                        };
                        if t.get(i) == Some(&Tok::Op("{".into())) {
                            i += 1;
                            loop {
                                match (&t[i], t.get(i + 1), t.get(i + 2)) {
                                    (Tok::Op(c), _, _) if c == "}" => {
                                        i += 1;
                                        break;
                                    }
                                    (Tok::Op(c), _, _) if c == "," => i += 1,
                                    (Tok::Ident(l), Some(Tok::Op(op)), Some(Tok::Str(v))) => {
                                        s.matchers.push((l.clone(), op.clone(), v.clone()));
                                        i += 3;
                                    }
                                    other => panic!("cannot read a matcher at {other:?} in {expr}"),
                                }
                            }
                        }
                        p.selectors.push(s);
                    }
                    w => p.unknown.push(w.to_string()),
                }
            }
            Tok::Op(o) if o == "{" => panic!("a selector without a metric name in {expr}"),
            _ => i += 1,
        }
    }
    p
}

// ---------------------------------------------------------------------------------------
// What the gateway exports.

/// Every sample of a Prometheus text exposition: metric name → the label sets of its series.
pub(crate) fn exposition(text: &str) -> BTreeMap<String, Vec<BTreeMap<String, String>>> {
    let mut out: BTreeMap<String, Vec<BTreeMap<String, String>>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name_end = line.find(['{', ' ']).unwrap();
        let name = &line[..name_end];
        let mut labels = BTreeMap::new();
        if line[name_end..].starts_with('{') {
            let cs: Vec<char> = line[name_end + 1..].chars().collect();
            let mut i = 0;
            while cs[i] != '}' {
                let start = i;
                while cs[i] != '=' {
                    i += 1;
                }
                let label: String = cs[start..i].iter().collect();
                i += 2; // ="
                let mut v = String::new();
                while cs[i] != '"' {
                    if cs[i] == '\\' {
                        i += 1;
                        v.push(if cs[i] == 'n' { '\n' } else { cs[i] });
                    } else {
                        v.push(cs[i]);
                    }
                    i += 1;
                }
                i += 1;
                if cs[i] == ',' {
                    i += 1;
                }
                labels.insert(label.trim().to_string(), v);
            }
        }
        out.entry(name.to_string()).or_default().push(labels);
    }
    out
}

pub(crate) fn matches(
    series: &BTreeMap<String, String>,
    (label, op, value): &(String, String, String),
) -> bool {
    if TARGET_LABELS.contains(&label.as_str()) {
        return true; // added by the scrape: whatever the test's Prometheus gives
    }
    let have = series.get(label).map(String::as_str).unwrap_or("");
    let re = || regex::Regex::new(&format!("^(?:{value})$")).unwrap();
    match op.as_str() {
        "=" => have == value,
        "!=" => have != value,
        "=~" => re().is_match(have),
        "!~" => !re().is_match(have),
        other => panic!("matcher operator {other}"),
    }
}

/// Every problem of one expression against the scraped metrics.
pub(crate) fn check_against(
    e: &Expr,
    promql: &str,
    metrics: &BTreeMap<String, Vec<BTreeMap<String, String>>>,
) -> Vec<String> {
    let p = parse(promql);
    let mut problems = Vec::new();
    let mut say =
        |what: String| problems.push(format!("{}: {what}\n    in: {}", e.origin, e.promql));
    if p.selectors.is_empty() {
        say("no gatehouse_ metric".into());
    }
    for u in &p.unknown {
        say(format!(
            "{u:?} is not a gatehouse_ metric, a function or a keyword"
        ));
    }
    let mut labels_of_expr: BTreeSet<String> =
        TARGET_LABELS.iter().map(|s| s.to_string()).collect();
    for s in &p.selectors {
        let Some(series) = metrics.get(&s.metric) else {
            say(format!(
                "{} is not in the gateway's /metrics (or has no series there)",
                s.metric
            ));
            continue;
        };
        let labels: BTreeSet<&String> = series.iter().flat_map(|l| l.keys()).collect();
        labels_of_expr.extend(labels.iter().map(|l| l.to_string()));
        for m in &s.matchers {
            if !labels.contains(&m.0) && !TARGET_LABELS.contains(&m.0.as_str()) {
                say(format!(
                    "{} has no label {:?} (it has {labels:?})",
                    s.metric, m.0
                ));
            }
        }
        if !series
            .iter()
            .any(|l| s.matchers.iter().all(|m| matches(l, m)))
        {
            let values: BTreeSet<String> = s
                .matchers
                .iter()
                .flat_map(|m| {
                    series
                        .iter()
                        .filter_map(|l| l.get(&m.0))
                        .map(move |v| format!("{}={v:?}", m.0))
                })
                .collect();
            say(format!(
                "{} selects no series of the gateway's /metrics (values there: {values:?})",
                s.promql()
            ));
        }
    }
    for l in p.by.iter().chain(&p.without).chain(&p.matching) {
        if !labels_of_expr.contains(l) {
            say(format!("grouping label {l:?} is on none of its metrics"));
        }
    }
    if let Some(l) = &e.label_values_of {
        if !labels_of_expr.contains(l) {
            say(format!(
                "label_values of {l:?}, which its metric does not have"
            ));
        }
    }
    // The labels a result can carry: the `by` lists when it aggregates by, else its metrics'
    // labels less `without` ones.
    let result_labels: BTreeSet<String> = if p.has_by {
        p.by.iter().cloned().collect()
    } else {
        labels_of_expr
            .iter()
            .filter(|l| !p.without.contains(l))
            .cloned()
            .collect()
    };
    for l in &e.uses_labels {
        if !result_labels.contains(l) {
            say(format!(
                "uses label {l:?}, which its result does not carry (it has {result_labels:?})"
            ));
        }
    }
    problems
}
