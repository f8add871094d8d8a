//! SVG plots (plotters, SVG backend only: no system fonts needed):
//! IOPS vs queue depth, submit-latency CDF, system context switches per IO.
//! One file per filesystem and plot.

use super::report::Column;
use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// (legend label, engine, column index, points).
type Series = (String, String, usize, Vec<(f64, f64)>);

const ENGINES: [&str; 4] = ["sync", "pool", "aio", "uring"];

fn color(engine: &str) -> RGBColor {
    match engine {
        "sync" => RGBColor(120, 120, 120),
        "pool" => RGBColor(31, 119, 180),
        "aio" => RGBColor(214, 39, 40),
        _ => RGBColor(44, 160, 44),
    }
}

/// (label, points) series of one metric over QD for the rand4k workload.
fn series_over_qd(cols: &[Column], fs: &str, f: fn(&super::Point) -> f64) -> Vec<Series> {
    let mut v = Vec::new();
    for (ci, c) in cols.iter().enumerate() {
        for e in ENGINES {
            let mut pts: Vec<(f64, f64)> = c
                .points
                .iter()
                .filter(|a| a.point.fs == fs && a.point.workload == "rand4k" && a.point.engine == e)
                .map(|a| (a.point.qd as f64, f(&a.point)))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            if !pts.is_empty() {
                v.push((format!("{e} ({})", c.label), e.to_string(), ci, pts));
            }
        }
    }
    v
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("plot: {e}")
}

fn draw_over_qd(
    path: &Path,
    title: &str,
    ylabel: &str,
    log_y: bool,
    series: &[Series],
) -> Result<()> {
    let max_qd = series
        .iter()
        .flat_map(|s| s.3.iter().map(|p| p.0))
        .fold(1.0, f64::max)
        .max(2.0);
    let ys = series.iter().flat_map(|s| s.3.iter().map(|p| p.1));
    let ymax = ys.clone().fold(0.0, f64::max).max(1e-3) * 1.3;
    let ymin = ys
        .filter(|y| *y > 0.0)
        .fold(f64::MAX, f64::min)
        .min(ymax / 2.0);
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut b = ChartBuilder::on(&root);
    b.caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70);
    macro_rules! body {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc("queue depth")
                .y_desc(ylabel)
                .draw()
                .map_err(err)?;
            for (label, engine, ci, pts) in series {
                let c = color(engine);
                let style = if *ci == 0 {
                    c.stroke_width(2)
                } else {
                    c.stroke_width(4)
                };
                chart
                    .draw_series(LineSeries::new(pts.iter().copied(), style))
                    .map_err(err)?
                    .label(label.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
                if *ci == 0 {
                    chart
                        .draw_series(pts.iter().map(|p| Circle::new(*p, 4, c.filled())))
                        .map_err(err)?;
                } else {
                    chart
                        .draw_series(pts.iter().map(|p| TriangleMarker::new(*p, 6, c.filled())))
                        .map_err(err)?;
                }
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperLeft)
                .draw()
                .map_err(err)?;
        }};
    }
    if log_y {
        body!(b
            .build_cartesian_2d(
                (1f64..max_qd).log_scale(),
                (ymin.max(1e-3)..ymax).log_scale()
            )
            .map_err(err)?);
    } else {
        body!(b
            .build_cartesian_2d((1f64..max_qd).log_scale(), 0f64..ymax)
            .map_err(err)?);
    }
    root.present().map_err(err)?;
    Ok(())
}

/// Submit-latency CDF of `workload` at queue depth `qd` (sync at QD 1).
fn draw_cdf(
    path: &Path,
    cols: &[Column],
    (fs, workload, title): (&str, &str, &str),
    qd: usize,
    lat_us: Option<f64>,
) -> Result<()> {
    let mut series = Vec::new();
    for (ci, c) in cols.iter().enumerate() {
        for e in ["sync", "aio", "uring"] {
            let q = if e == "sync" { 1 } else { qd };
            if let Some(a) = c.find(fs, workload, e, q) {
                let cdf = &a.point.submit_cdf_us;
                if cdf.len() < 2 {
                    continue;
                }
                let n = (cdf.len() - 1) as f64;
                let pts: Vec<(f64, f64)> = cdf
                    .iter()
                    .enumerate()
                    .map(|(i, &x)| (x.max(0.1), i as f64 / n))
                    .collect();
                series.push((format!("{e} QD{q} ({})", c.label), e, ci, pts));
            }
        }
    }
    let xmax = series
        .iter()
        .flat_map(|s| s.3.iter().map(|p| p.0))
        .fold(10.0, f64::max)
        * 1.5;
    let xmin = series
        .iter()
        .flat_map(|s| s.3.iter().map(|p| p.0))
        .fold(f64::MAX, f64::min)
        .min(1.0);
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{fs}: submit latency CDF, {title}"),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((xmin..xmax).log_scale(), 0f64..1.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("time inside the submit call (µs, log)")
        .y_desc("fraction of IOs")
        .draw()
        .map_err(err)?;
    if let Some(l) = lat_us {
        chart
            .draw_series(LineSeries::new(
                vec![(l, 0.0), (l, 1.0)],
                BLACK.mix(0.4).stroke_width(1),
            ))
            .map_err(err)?
            .label(format!("device latency L = {l:.0} µs"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.4)));
    }
    for (label, e, ci, pts) in &series {
        let c = color(e);
        let style = if *ci == 0 {
            c.stroke_width(2)
        } else {
            c.stroke_width(4)
        };
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), style))
            .map_err(err)?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Writes the plots into `dir`; returns their paths.
pub fn write_all(
    dir: &Path,
    cols: &[Column],
    qd: usize,
    lat_us: Option<f64>,
) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut fss: Vec<String> = Vec::new();
    for c in cols {
        for f in c.filesystems() {
            if !fss.contains(&f) {
                fss.push(f);
            }
        }
    }
    let legend = if cols.len() > 1 {
        format!(
            " — thin/circles: {}, thick/triangles: {}",
            cols[0].label, cols[1].label
        )
    } else {
        String::new()
    };
    for fs in &fss {
        let p = dir.join(format!("iops-vs-qd-{fs}.svg"));
        let s = series_over_qd(cols, fs, |p| p.iops);
        if !s.is_empty() {
            draw_over_qd(
                &p,
                &format!("{fs}: cold 4 KiB random read IOPS{legend}"),
                "IOPS (log)",
                true,
                &s,
            )?;
            out.push(p);
        }
        let p = dir.join(format!("sys-ctx-per-io-{fs}.svg"));
        let s = series_over_qd(cols, fs, |p| p.sys_ctx_per_io);
        if !s.is_empty() {
            draw_over_qd(
                &p,
                &format!("{fs}: system-wide context switches per IO{legend}"),
                "ctx switches / IO",
                false,
                &s,
            )?;
            out.push(p);
        }
        let p = dir.join(format!("submit-cdf-{fs}.svg"));
        draw_cdf(
            &p,
            cols,
            (fs, "rand4k", "cold 4 KiB random reads"),
            qd,
            lat_us,
        )?;
        out.push(p);
        let wqd = cols.iter().filter_map(super::report::write_qd).max();
        for (w, title) in [
            ("write4k", "4 KiB buffered random writes"),
            ("write4k-dsync", "O_DSYNC 4 KiB random writes"),
        ] {
            let Some(wqd) = wqd else { break };
            if !cols.iter().any(|c| c.find(fs, w, "aio", wqd).is_some()) {
                continue;
            }
            let p = dir.join(format!("submit-cdf-{w}-{fs}.svg"));
            draw_cdf(&p, cols, (fs, w, title), wqd, lat_us)?;
            out.push(p);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{Agg, Point};

    #[test]
    fn writes_svg_without_fonts() {
        let mk = |e: &str, qd: usize, iops: f64| Agg {
            point: Point {
                fs: "ext2".into(),
                workload: "rand4k".into(),
                engine: e.into(),
                qd,
                iops,
                sys_ctx_per_io: 1.5,
                submit_cdf_us: (0..=100).map(|i| 10.0 + i as f64 * 20.0).collect(),
                ..Point::default()
            },
            repeats: 1,
            iops_min: iops,
            iops_max: iops,
            iops_by_run: vec![Some(iops)],
        };
        let mut dsync = mk("aio", 32, 700.0);
        dsync.point.workload = "write4k-dsync".into();
        let cols = [Column {
            label: "unpatched".into(),
            kernel_release: None,
            points: vec![
                mk("aio", 1, 500.0),
                mk("aio", 32, 600.0),
                mk("pool", 32, 8000.0),
                mk("sync", 1, 550.0),
                dsync,
            ],
            fio: vec![],
        }];
        let d = tempfile::tempdir().unwrap();
        let files = write_all(d.path(), &cols, 32, Some(1000.0)).unwrap();
        assert_eq!(files.len(), 4, "{files:?}");
        assert!(files[3].ends_with("submit-cdf-write4k-dsync-ext2.svg"));
        for f in files {
            let s = std::fs::read_to_string(&f).unwrap();
            assert!(
                s.starts_with("<svg") && s.contains("<polyline"),
                "{}",
                f.display()
            );
            assert!(
                s.contains("aio (unpatched)") || s.contains("aio QD32 (unpatched)"),
                "{}",
                f.display()
            );
        }
    }
}
