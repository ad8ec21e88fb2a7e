//! A hand-written SVG: throughput over time on top, the latency histogram below (log-scaled
//! latency axis, percentile markers). No plotting crate: two charts do not need one.

use std::fmt::Write as _;

use crate::report::Report;

const W: f64 = 900.0;
const PANEL_H: f64 = 260.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;

pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let h = 2.0 * PANEL_H + 90.0;
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let title = format!(
        "switchyard-load {} — {} delivered, {} lost, {:.0} deliveries/s, p99 {} µs",
        r.scenario, r.delivered, r.lost, r.deliveries_per_s, r.latency.p99_us
    );
    let _ = writeln!(s, r#"<text x="{LEFT}" y="20" font-size="14">{}</text>"#, esc(&title));
    throughput(&mut s, r, 40.0);
    latency(&mut s, r, 40.0 + PANEL_H + 40.0);
    s.push_str("</svg>\n");
    s
}

fn axes(s: &mut String, top: f64, label: &str, xlabel: &str) {
    let bottom = top + PANEL_H - 30.0;
    let _ = writeln!(
        s,
        r#"<line x1="{LEFT}" y1="{top}" x2="{LEFT}" y2="{bottom}" stroke="black"/><line x1="{LEFT}" y1="{bottom}" x2="{}" y2="{bottom}" stroke="black"/>"#,
        W - RIGHT
    );
    let _ = writeln!(s, r#"<text x="{LEFT}" y="{}" >{}</text>"#, top - 6.0, esc(label));
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
        W - RIGHT,
        bottom + 28.0,
        esc(xlabel)
    );
}

fn throughput(s: &mut String, r: &Report, top: f64) {
    axes(s, top, "throughput (per second)", "seconds");
    let bottom = top + PANEL_H - 30.0;
    let pts = &r.throughput;
    if pts.is_empty() {
        let _ = writeln!(s, r#"<text x="{}" y="{}">no samples</text>"#, LEFT + 10.0, top + 40.0);
        return;
    }
    let tmax = pts.iter().map(|p| p.t_s).fold(0.0, f64::max).max(1e-3);
    let ymax =
        pts.iter().map(|p| p.deliveries_per_s.max(p.publishes_per_s)).fold(0.0, f64::max).max(1.0);
    let x = |t: f64| LEFT + (W - LEFT - RIGHT) * t / tmax;
    let y = |v: f64| bottom - (bottom - top) * v / ymax;
    for i in 0..=4 {
        let v = ymax * i as f64 / 4.0;
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}" text-anchor="end">{}</text><line x1="{LEFT}" y1="{3}" x2="{4}" y2="{3}" stroke="#ddd"/>"##,
            LEFT - 4.0,
            y(v) + 4.0,
            si(v),
            y(v),
            W - RIGHT
        );
    }
    for i in 0..=4 {
        let t = tmax * i as f64 / 4.0;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{:.1}</text>"#,
            x(t),
            bottom + 14.0,
            t
        );
    }
    let line = |f: &dyn Fn(&crate::live::Point) -> f64| {
        pts.iter().map(|p| format!("{:.1},{:.1}", x(p.t_s), y(f(p)))).collect::<Vec<_>>().join(" ")
    };
    let _ = writeln!(
        s,
        r##"<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{}"/>"##,
        line(&|p| p.deliveries_per_s)
    );
    let _ = writeln!(
        s,
        r##"<polyline fill="none" stroke="#ff7f0e" stroke-width="1.5" stroke-dasharray="4 3" points="{}"/>"##,
        line(&|p| p.publishes_per_s)
    );
    let _ = writeln!(
        s,
        r##"<text x="{}" y="{}" fill="#1f77b4">deliveries/s</text><text x="{}" y="{1}" fill="#ff7f0e">publishes/s</text>"##,
        W - RIGHT - 200.0,
        top + 12.0,
        W - RIGHT - 100.0
    );
}

fn latency(s: &mut String, r: &Report, top: f64) {
    axes(s, top, "latency histogram (deliveries per bucket)", "latency (log scale)");
    let bottom = top + PANEL_H - 30.0;
    let b: Vec<(u64, u64)> = r.latency_buckets.iter().copied().filter(|&(_, c)| c > 0).collect();
    if b.is_empty() {
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}">no latency samples</text>"#,
            LEFT + 10.0,
            top + 40.0
        );
        return;
    }
    let lo = (b[0].0.max(1) as f64).log10().floor();
    let hi = (b[b.len() - 1].0.max(2) as f64).log10().ceil().max(lo + 1.0);
    let cmax = b.iter().map(|&(_, c)| c).max().unwrap_or(1) as f64;
    let x = |v: f64| LEFT + (W - LEFT - RIGHT) * ((v.max(1.0)).log10() - lo) / (hi - lo);
    let y = |c: f64| bottom - (bottom - top) * c / cmax;
    let mut prev = 10f64.powf(lo);
    for &(v, c) in &r.latency_buckets {
        let v = v as f64;
        if c > 0 {
            let (x0, x1) = (x(prev), x(v));
            let _ = writeln!(
                s,
                r##"<rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#2ca02c"/>"##,
                y(c as f64),
                (x1 - x0).max(1.0),
                bottom - y(c as f64)
            );
        }
        prev = v;
    }
    let mut d = lo;
    while d <= hi {
        let v = 10f64.powf(d);
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            x(v),
            bottom + 14.0,
            dur(v)
        );
        d += 1.0;
    }
    let l = &r.latency;
    for (name, v, color) in
        [("p50", l.p50_us, "#444"), ("p99", l.p99_us, "#d62728"), ("p99.9", l.p999_us, "#9467bd")]
    {
        let xv = x(v as f64);
        let _ = writeln!(
            s,
            r#"<line x1="{xv:.1}" y1="{top}" x2="{xv:.1}" y2="{bottom}" stroke="{color}" stroke-dasharray="3 3"/><text x="{:.1}" y="{}" fill="{color}">{name} {}</text>"#,
            xv + 3.0,
            top + 12.0,
            dur(v as f64)
        );
    }
}

fn dur(us: f64) -> String {
    if us >= 1e6 {
        format!("{:.0}s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.0}ms", us / 1e3)
    } else {
        format!("{us:.0}µs")
    }
}

fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn esc(t: &str) -> String {
    t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
