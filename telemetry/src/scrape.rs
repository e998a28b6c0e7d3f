//! Reading a scrape: one sample of the OpenMetrics (or Prometheus) text format, found by its
//! name and its exact label set. For tests and scripts that check what an exporter says; a
//! Prometheus server reads the text itself.

/// The value of the sample `name` whose labels are exactly `labels` (in any order), in the
/// scrape `text`; `None` when there is none, or when its value is not a number.
///
/// ```
/// let text = "# TYPE hits counter\nhits_total{route=\"/a\",class=\"2xx\"} 4\n# EOF\n";
/// let hits = |labels| telemetry::scrape::sample(text, "hits_total", labels);
/// assert_eq!(hits(&[("class", "2xx"), ("route", "/a")]), Some(4.0));
/// assert_eq!(hits(&[("route", "/a")]), None);
/// ```
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(parse_line)
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .and_then(|s| s.value)
}

/// One sample line, read.
struct Line<'a> {
    name: &'a str,
    labels: Vec<(&'a str, String)>,
    value: Option<f64>,
}

/// `name{k="v",…} value [timestamp] [# exemplar]`; `None` when the line is not one.
fn parse_line(line: &str) -> Option<Line<'_>> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        loop {
            // A key, up to `=`; or the closing brace.
            let (start, c) = chars.next()?;
            if c == '}' {
                rest = &inner[start + 1..];
                break;
            }
            if c == ',' {
                continue;
            }
            let eq = inner[start..].find('=')? + start;
            let key = &inner[start..eq];
            // Skip to the opening quote.
            while chars.next()?.0 < eq + 1 {}
            let mut value = String::new();
            loop {
                match chars.next()?.1 {
                    '"' => break,
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    other => value.push(other),
                }
            }
            labels.push((key, value));
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        v => v.parse().ok(),
    };
    Some(Line {
        name,
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP a_total A.\n\
        # TYPE a counter\n\
        a_total 7\n\
        a_created 1.7e9\n\
        b{x=\"1\"} 2.5\n\
        b{x=\"1\",y=\"two, \\\"quoted\\\"\"} 3 1700000000\n\
        c_bucket{le=\"+Inf\"} 9\n\
        d many\n\
        # EOF\n";

    /// A name, labels, and the value expected.
    type Case = (
        &'static str,
        &'static [(&'static str, &'static str)],
        Option<f64>,
    );

    #[test]
    fn finds_samples_by_name_and_exact_labels() {
        let cases: &[Case] = &[
            ("a_total", &[], Some(7.0)),
            ("a", &[], None),
            ("a_created", &[], Some(1.7e9)),
            ("b", &[("x", "1")], Some(2.5)),
            ("b", &[("y", "two, \"quoted\""), ("x", "1")], Some(3.0)),
            ("b", &[], None),
            ("b", &[("x", "2")], None),
            ("c_bucket", &[("le", "+Inf")], Some(9.0)),
            ("d", &[], None),
            ("e", &[], None),
        ];
        for (name, labels, expected) in cases {
            let got = sample(TEXT, name, labels);
            match expected {
                Some(v) => assert_eq!(got, Some(*v), "{name} {labels:?}"),
                None => assert!(got.is_none(), "{name} {labels:?}: {got:?}"),
            }
        }
    }

    #[test]
    fn broken_lines_are_skipped() {
        assert_eq!(sample("x{a=\"1\" 3\nx 4\n", "x", &[]), Some(4.0));
        assert_eq!(sample("noval\n", "noval", &[]), None);
    }
}
