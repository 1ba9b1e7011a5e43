//! Throughput and latency under wrk: the secondary figures, since on a
//! shared 2-core machine they swing by 30–100 % between identical runs.

use super::Load;
use std::path::Path;
use std::process::Command;

/// One wrk run's figures.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub non_2xx: u64,
}

pub fn run(url: &str, load: &Load, seconds: u32, connections: u32, dir: &Path) -> Run {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t1",
        &format!("-c{connections}"),
        &format!("-d{seconds}s"),
        "--latency",
    ]);
    match load {
        Load::Fixed(headers) => {
            for (k, v) in headers {
                cmd.args(["-H", &format!("{k}: {v}")]);
            }
        }
        Load::Tokens(pool) => {
            let script = dir.join("tokens.lua");
            let list: Vec<String> = pool.iter().map(|t| format!("\"{t}\"")).collect();
            std::fs::write(
                &script,
                format!(
                    "local tokens = {{{}}}\nlocal i = 0\nrequest = function()\n  i = i % #tokens + 1\n  return wrk.format(\"GET\", nil, {{[\"authorization\"] = \"Bearer \" .. tokens[i]}})\nend\n",
                    list.join(",")
                ),
            )
            .expect("write wrk script");
            cmd.arg("-s").arg(&script);
        }
    }
    let out = cmd
        .arg(url)
        .output()
        .expect("run wrk (make bench installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    parse(&text).unwrap_or_else(|| panic!("unreadable wrk output:\n{text}"))
}

fn parse(text: &str) -> Option<Run> {
    let value_after = |label: &str| -> Option<&str> {
        text.lines()
            .find(|l| l.trim_start().starts_with(label))?
            .trim_start()
            .strip_prefix(label)
            .map(str::trim)
    };
    let duration_ms = |s: &str| -> Option<f64> {
        let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
        let n: f64 = num.parse().ok()?;
        Some(match unit {
            "us" => n / 1000.0,
            "ms" => n,
            "s" => n * 1000.0,
            "m" => n * 60_000.0,
            _ => return None,
        })
    };
    let non_2xx = value_after("Non-2xx or 3xx responses:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some(Run {
        rps: value_after("Requests/sec:")?.parse().ok()?,
        p50_ms: duration_ms(value_after("50%")?)?,
        p99_ms: duration_ms(value_after("99%")?)?,
        non_2xx,
    })
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn rss_mb(pid: u32) -> f64 {
    crate::envoy::resident_kb(pid).map_or(0.0, |kb| kb as f64 / 1024.0)
}
