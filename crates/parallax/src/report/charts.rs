//! The HTML report's charts, drawn by plotters into SVG strings that the page inlines: lines
//! with a band over seeds (time to accuracy, training loss) and bars with confidence whiskers
//! (seconds per epoch, peak memory, time to first step).
//!
//! plotters' SVG backend writes text as `<text>` elements with a generic font family, so the
//! charts need no font file and fetch nothing; it escapes that text itself.

use parallax_core::record::{EpochRecord, RunRecord};
use parallax_core::stats::{Interval, median};
use plotters::chart::MeshStyle;
use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::element::{Drawable, PointCollection};
use plotters::prelude::*;
use plotters_backend::{BackendCoord, DrawingErrorKind};

use crate::error::{Error, Result};

/// Width and height of a line chart, in SVG user units (the page scales it to its column).
/// Narrow enough that its text, scaled into a phone's 370 px column, stays above 10 px.
const LINE_SIZE: (u32, u32) = (520, 340);
/// Width of a bar chart; its height grows with its bars.
const BAR_WIDTH: u32 = 400;
/// Height per bar.
const BAR_PITCH: u32 = 40;
const FONT: &str = "sans-serif";
/// plotters' font size for labels; its SVG writes 1/1.24 of it as `font-size`, 16.1 units,
/// which a 370 px column shows at 11.5 px.
const LABEL_SIZE: u32 = 20;

/// The colours of the registry's rows: Okabe and Ito's palette without its yellow (too light on
/// white). Its seven colours keep a CIEDE2000 difference of at least 10 between every pair,
/// in normal vision and in simulated protanopia, deuteranopia and tritanopia (tested below).
const PALETTE: [RGBColor; 7] = [
    RGBColor(0x00, 0x9e, 0x73), // burn: bluish green
    RGBColor(0x00, 0x72, 0xb2), // tch: blue
    RGBColor(0x56, 0xb4, 0xe9), // burn-tch: sky blue
    RGBColor(0xe6, 0x9f, 0x00), // tf: orange
    RGBColor(0xd5, 0x5e, 0x00), // pytorch: vermillion
    RGBColor(0xcc, 0x79, 0xa7), // keras: reddish purple
    RGBColor(0x00, 0x00, 0x00), // keras-torch: black
];
/// A backend the registry does not list (an old record's).
const UNLISTED: RGBColor = RGBColor(0x88, 0x88, 0x88);

/// A backend's row in the registry, which fixes its colour, dash and marker.
fn row(backend: &str) -> Option<usize> {
    parallax_registry::BACKENDS
        .iter()
        .position(|entry| entry.name == backend)
}

/// The colour of a backend: the same in every chart and report, by its row in the registry.
pub fn colour(backend: &str) -> RGBColor {
    row(backend).map_or(UNLISTED, |row| PALETTE[row % PALETTE.len()])
}

/// A series' marker: each registry row has its own shape, so that lines that coincide, or
/// print in grey, stay apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marker {
    /// A filled disc.
    Disc,
    /// A filled square.
    Square,
    /// A filled triangle, point up.
    Triangle,
    /// A filled diamond.
    Diamond,
    /// An ×.
    Cross,
    /// A ring.
    Ring,
    /// A square outline.
    Box,
}

/// How a backend's line is drawn besides its colour: a dash pattern (dash and gap, in pixels;
/// none for a solid line) and a marker at each point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stroke {
    /// Dash and gap lengths; `None` draws a solid line.
    pub dash: Option<(u32, u32)>,
    /// The marker at each point.
    pub marker: Marker,
}

const STROKES: [Stroke; 7] = [
    Stroke {
        dash: None,
        marker: Marker::Disc,
    },
    Stroke {
        dash: Some((12, 5)),
        marker: Marker::Square,
    },
    Stroke {
        dash: Some((3, 4)),
        marker: Marker::Triangle,
    },
    Stroke {
        dash: Some((20, 6)),
        marker: Marker::Diamond,
    },
    Stroke {
        dash: Some((7, 7)),
        marker: Marker::Cross,
    },
    Stroke {
        dash: Some((2, 9)),
        marker: Marker::Ring,
    },
    Stroke {
        dash: Some((28, 4)),
        marker: Marker::Box,
    },
];

/// A backend's dash pattern and marker, by its row in the registry.
pub fn stroke(backend: &str) -> Stroke {
    row(backend).map_or(STROKES[0], |row| STROKES[row % STROKES.len()])
}

/// A marker at a point, drawn straight on the backend: one element type for every shape.
struct MarkerAt<C> {
    at: C,
    /// Pixels to the right of `at`: markers of coinciding lines step aside so that each shows.
    dodge: i32,
    shape: Marker,
    colour: RGBColor,
}

impl<'a, C: 'a> PointCollection<'a, C> for &'a MarkerAt<C> {
    type Point = &'a C;
    type IntoIter = std::iter::Once<&'a C>;
    fn point_iter(self) -> Self::IntoIter {
        std::iter::once(&self.at)
    }
}

impl<C, DB: DrawingBackend> Drawable<DB> for MarkerAt<C> {
    fn draw<I: Iterator<Item = BackendCoord>>(
        &self,
        mut points: I,
        backend: &mut DB,
        _: (u32, u32),
    ) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        let Some((x, y)) = points.next() else {
            return Ok(());
        };
        let x = x + self.dodge;
        let filled = self.colour.filled();
        let outline = self.colour.stroke_width(2);
        match self.shape {
            Marker::Disc => backend.draw_circle((x, y), 4, &filled, true),
            Marker::Ring => backend.draw_circle((x, y), 5, &outline, false),
            Marker::Square => backend.draw_rect((x - 4, y - 4), (x + 4, y + 4), &filled, true),
            Marker::Box => backend.draw_rect((x - 5, y - 5), (x + 5, y + 5), &outline, false),
            Marker::Triangle => {
                backend.fill_polygon([(x, y - 5), (x + 5, y + 4), (x - 5, y + 4)], &filled)
            }
            Marker::Diamond => {
                backend.fill_polygon([(x, y - 6), (x + 5, y), (x, y + 6), (x - 5, y)], &filled)
            }
            Marker::Cross => {
                backend.draw_line((x - 4, y - 4), (x + 4, y + 4), &outline)?;
                backend.draw_line((x - 4, y + 4), (x + 4, y - 4), &outline)
            }
        }
    }
}

/// The colour as CSS writes it.
pub fn css_colour(backend: &str) -> String {
    let RGBColor(r, g, b) = colour(backend);
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// One point of a line over seeds: where it lies, the mean over seeds, and the band (the
/// lowest and highest seed).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BandPoint {
    /// The x value (the median over seeds where it varies, as training seconds do).
    pub x: f64,
    /// The mean over seeds.
    pub mean: f64,
    /// The lowest seed's value.
    pub low: f64,
    /// The highest seed's value.
    pub high: f64,
    /// Seeds at this point.
    pub seeds: usize,
}

/// One backend's line over seeds.
#[derive(Clone, Debug)]
pub struct Band {
    /// The backend.
    pub backend: String,
    /// Its points, in epoch order.
    pub points: Vec<BandPoint>,
}

/// Each backend's line over its runs, epoch by epoch: `x` and `y` read an epoch's values.
/// Runs that stopped early count for the epochs they finished; values that are not finite
/// (a diverged loss) are left out.
pub fn bands(
    records: &[&RunRecord],
    x: impl Fn(&EpochRecord) -> f64,
    y: impl Fn(&EpochRecord) -> f64,
) -> Vec<Band> {
    let mut backends: Vec<&str> = Vec::new();
    for record in records {
        if !backends.contains(&record.backend.as_str()) {
            backends.push(&record.backend);
        }
    }
    backends
        .into_iter()
        .map(|backend| {
            let runs: Vec<&&RunRecord> = records.iter().filter(|r| r.backend == backend).collect();
            let epochs = runs.iter().map(|r| r.epochs.len()).max().unwrap_or(0);
            let points = (0..epochs)
                .filter_map(|index| {
                    let finished: Vec<&EpochRecord> = runs
                        .iter()
                        .filter_map(|r| r.epochs.get(index))
                        .filter(|e| x(e).is_finite() && y(e).is_finite())
                        .collect();
                    if finished.is_empty() {
                        return None;
                    }
                    let xs: Vec<f64> = finished.iter().map(|e| x(e)).collect();
                    let ys: Vec<f64> = finished.iter().map(|e| y(e)).collect();
                    Some(BandPoint {
                        x: median(&xs),
                        mean: ys.iter().sum::<f64>() / ys.len() as f64,
                        low: ys.iter().copied().fold(f64::INFINITY, f64::min),
                        high: ys.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                        seeds: ys.len(),
                    })
                })
                .collect();
            Band {
                backend: backend.to_string(),
                points,
            }
        })
        .collect()
}

/// The groups of backends whose lines coincide: as many points, and at each the means within
/// 0.5% of the chart's y span of one another, the width of a line. Their markers keep them
/// apart, and the caption says so.
pub fn coinciding(bands: &[Band]) -> Vec<Vec<String>> {
    let (low, high) = bands
        .iter()
        .flat_map(|band| band.points.iter())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), p| {
            (low.min(p.low.min(p.mean)), high.max(p.high.max(p.mean)))
        });
    let tolerance = if high > low {
        0.005 * (high - low)
    } else {
        0.0
    };
    let same = |a: &Band, b: &Band| {
        a.points.len() == b.points.len()
            && a.points
                .iter()
                .zip(&b.points)
                .all(|(p, q)| (p.mean - q.mean).abs() <= tolerance)
    };
    let mut groups: Vec<Vec<&Band>> = Vec::new();
    for band in bands.iter().filter(|band| !band.points.is_empty()) {
        match groups.iter_mut().find(|group| same(group[0], band)) {
            Some(group) => group.push(band),
            None => groups.push(vec![band]),
        }
    }
    groups
        .into_iter()
        .filter(|group| group.len() > 1)
        .map(|group| group.iter().map(|band| band.backend.clone()).collect())
        .collect()
}

/// The smallest CIEDE2000 difference that two series' colours must keep, in every vision.
pub const DISTINCT: f32 = 10.0;

/// Colour-vision deficiencies as Machado, Oliveira and Fernandes (2009) simulate them at full
/// severity: a matrix applied to linear sRGB. Normal vision first.
const VISIONS: [(&str, [[f32; 3]; 3]); 4] = [
    (
        "normal vision",
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
    ),
    (
        "protanopia",
        [
            [0.152286, 1.052583, -0.204868],
            [0.114503, 0.786281, 0.099216],
            [-0.003882, -0.048116, 1.051998],
        ],
    ),
    (
        "deuteranopia",
        [
            [0.367322, 0.860646, -0.227968],
            [0.280085, 0.672501, 0.047413],
            [-0.011820, 0.042940, 0.968881],
        ],
    ),
    (
        "tritanopia",
        [
            [1.255528, -0.076749, -0.178779],
            [-0.078411, 0.930809, 0.147602],
            [0.004733, 0.691367, 0.303900],
        ],
    ),
];

/// The smallest CIEDE2000 difference between any two of `colours`, in normal vision and in
/// simulated protanopia, deuteranopia and tritanopia, and which two in which vision.
pub fn smallest_difference(colours: &[(String, RGBColor)]) -> (f32, String) {
    use palette::color_difference::Ciede2000;
    use palette::{FromColor, Lab, LinSrgb, Srgb};
    let mut smallest = (f32::INFINITY, String::from("fewer than two colours"));
    for (vision, matrix) in VISIONS {
        let seen: Vec<(&str, Lab)> = colours
            .iter()
            .map(|(name, RGBColor(r, g, b))| {
                let linear: LinSrgb = Srgb::new(*r, *g, *b).into_format::<f32>().into_linear();
                let rgb = [linear.red, linear.green, linear.blue];
                let [r, g, b] = matrix.map(|row| {
                    (row[0] * rgb[0] + row[1] * rgb[1] + row[2] * rgb[2]).clamp(0.0, 1.0)
                });
                (name.as_str(), Lab::from_color(LinSrgb::new(r, g, b)))
            })
            .collect();
        for (i, (a, lab_a)) in seen.iter().enumerate() {
            for (b, lab_b) in &seen[i + 1..] {
                let difference = lab_a.difference(*lab_b);
                if difference < smallest.0 {
                    smallest = (difference, format!("{a} and {b} in {vision}"));
                }
            }
        }
    }
    smallest
}

/// A range that holds `values` with a little room on each side, and some width when they are
/// all equal.
fn padded(values: impl Iterator<Item = f64>, floor: Option<f64>) -> std::ops::Range<f64> {
    let (low, high) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), v| {
        (low.min(v), high.max(v))
    });
    if !low.is_finite() || !high.is_finite() {
        return 0.0..1.0;
    }
    let room = if high > low {
        (high - low) * 0.06
    } else {
        low.abs().max(1.0) * 0.05
    };
    let start = floor.map_or(low - room, |floor| floor.max(low - room));
    start..high + room
}

/// The look every chart's axes and grid share: labels large enough to read once the page
/// scales the chart down, and a light grid.
fn house_style<'a, 'b, 'm, XT, YT, X, Y, DB>(
    mesh: &'m mut MeshStyle<'a, 'b, X, Y, DB>,
) -> &'m mut MeshStyle<'a, 'b, X, Y, DB>
where
    X: Ranged<ValueType = XT> + ValueFormatter<XT>,
    Y: Ranged<ValueType = YT> + ValueFormatter<YT>,
    DB: DrawingBackend,
{
    // Major grid lines only, light; no minor ones.
    mesh.label_style((FONT, LABEL_SIZE))
        .axis_desc_style((FONT, LABEL_SIZE))
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(0xe4, 0xe4, 0xe4))
}

/// An error of plotters' SVG backend, as the library's (plotters' errors borrow the
/// backend, so only their text is kept).
fn drawing<E: std::fmt::Debug>(error: E) -> Error {
    Error::Chart(format!("{error:?}"))
}

/// What a line chart's x axis counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XAxis {
    /// Epochs: ticks on whole epochs only.
    Epochs,
    /// Seconds: the axis starts at 0, so that a late start (the first epoch's warm-up) shows.
    Seconds,
}

/// A line chart of `bands`, one line per backend with its band over seeds, as SVG: each line
/// with its colour, dash pattern and marker.
pub fn line_chart(
    title: &str,
    x_description: &str,
    y_description: &str,
    bands: &[Band],
    x_axis: XAxis,
) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, LINE_SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(drawing)?;
        let points = || bands.iter().flat_map(|band| band.points.iter());
        let (x_range, x_labels) = match x_axis {
            XAxis::Seconds => {
                let end = padded(points().map(|p| p.x), Some(0.0)).end;
                (0.0..end, 6)
            }
            XAxis::Epochs => {
                let last = points().map(|p| p.x).fold(1.0_f64, f64::max).ceil();
                // As many labels as epochs: plotters then steps by a whole epoch or more.
                ((1.0 - 0.25)..(last + 0.25), last as usize)
            }
        };
        let whole = |x: &f64| {
            if (x - x.round()).abs() < 1e-9 {
                format!("{x:.0}")
            } else {
                String::new()
            }
        };
        let y_range = padded(points().flat_map(|p| [p.low, p.high]), None);
        let mut chart = ChartBuilder::on(&root)
            .margin(14)
            .x_label_area_size(54)
            .y_label_area_size(84)
            .build_cartesian_2d(x_range, y_range)
            .map_err(drawing)?;
        let mut mesh = chart.configure_mesh();
        mesh.x_desc(x_description)
            .y_desc(y_description)
            .x_labels(x_labels)
            .y_labels(6);
        let seconds = |x: &f64| tick(*x);
        let y_tick = |y: &f64| tick(*y);
        match x_axis {
            XAxis::Epochs => mesh.x_label_formatter(&whole),
            XAxis::Seconds => mesh.x_label_formatter(&seconds),
        };
        mesh.y_label_formatter(&y_tick);
        house_style(&mut mesh).draw().map_err(drawing)?;
        // Markers of coinciding lines step aside, 10 px apart, centred on the point: the lines
        // stay exact, and each marker shows.
        let groups = coinciding(bands);
        let dodge = |backend: &str| {
            groups
                .iter()
                .find_map(|group| {
                    let index = group.iter().position(|name| name == backend)?;
                    let centre = (group.len() as f64 - 1.0) / 2.0;
                    Some(((index as f64 - centre) * 10.0).round() as i32)
                })
                .unwrap_or(0)
        };
        for band in bands {
            let colour = colour(&band.backend);
            if band.points.iter().any(|p| p.high > p.low) {
                let outline: Vec<(f64, f64)> = band
                    .points
                    .iter()
                    .map(|p| (p.x, p.high))
                    .chain(band.points.iter().rev().map(|p| (p.x, p.low)))
                    .collect();
                chart
                    .draw_series(std::iter::once(Polygon::new(
                        outline,
                        colour.mix(0.18).filled(),
                    )))
                    .map_err(drawing)?;
            }
            let Stroke {
                dash,
                marker: shape,
            } = stroke(&band.backend);
            let line = band.points.iter().map(|p| (p.x, p.mean));
            let style = colour.stroke_width(2);
            // The page's legend, above the charts, shows each backend's colour, dash and
            // marker (html.rs), so no legend box covers the lines.
            match dash {
                None => chart.draw_series(LineSeries::new(line, style)),
                Some((size, gap)) => {
                    chart.draw_series(DashedLineSeries::new(line, size, gap, style))
                }
            }
            .map_err(drawing)?;
            chart
                .draw_series(band.points.iter().map(|p| MarkerAt {
                    at: (p.x, p.mean),
                    dodge: dodge(&band.backend),
                    shape,
                    colour,
                }))
                .map_err(drawing)?;
        }
        root.present().map_err(drawing)?;
    }
    Ok(titled(svg, title))
}

/// One bar: a backend's mean over seeds and the 95% interval of that mean, when there are
/// several seeds.
#[derive(Clone, Debug)]
pub struct Bar {
    /// The backend.
    pub backend: String,
    /// The mean.
    pub value: f64,
    /// The 95% interval of the mean (Student's t), for two or more seeds.
    pub interval: Option<Interval>,
}

/// A bar chart, one horizontal bar per backend (first at the top) with its whisker and its
/// value written at its end, as SVG; `format` writes a value. Horizontal, so that names of
/// any length stay legible at a phone's width.
pub fn bar_chart(
    title: &str,
    x_description: &str,
    bars: &[Bar],
    format: &dyn Fn(f64) -> String,
) -> Result<String> {
    let count = i32::try_from(bars.len().max(1)).unwrap_or(i32::MAX);
    let size = (BAR_WIDTH, 96 + BAR_PITCH * count.unsigned_abs());
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(drawing)?;
        let end = bars
            .iter()
            .map(|bar| bar.interval.map_or(bar.value, |i| i.high.max(bar.value)))
            .filter(|v| v.is_finite())
            .fold(0.0_f64, f64::max);
        // Room on the right for the value written after the longest bar.
        let end = if end > 0.0 { end * 1.45 } else { 1.0 };
        let names: Vec<String> = bars.iter().map(|bar| bar.backend.clone()).collect();
        // Segment 0 is at the bottom: bar `i` sits in segment `count - 1 - i`.
        let slot = |i: i32| count - 1 - i;
        let label = |y: &SegmentValue<i32>| -> String {
            match y {
                SegmentValue::CenterOf(index) => usize::try_from(slot(*index))
                    .ok()
                    .and_then(|index| names.get(index).cloned())
                    .unwrap_or_default(),
                _ => String::new(),
            }
        };
        // plotters' integer ranges include their end: 0..count-1 holds one segment per bar.
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .margin_right(20)
            .x_label_area_size(58)
            .y_label_area_size(118)
            .build_cartesian_2d(0.0..end, (0..count - 1).into_segmented())
            .map_err(drawing)?;
        let mut mesh = chart.configure_mesh();
        mesh.disable_y_mesh()
            .x_desc(x_description)
            .x_labels(4)
            .x_label_formatter(&|x| tick(*x))
            .y_label_formatter(&label);
        house_style(&mut mesh).draw().map_err(drawing)?;
        for (i, bar) in (0..count).zip(bars) {
            if !bar.value.is_finite() {
                continue;
            }
            let colour = colour(&bar.backend);
            let at = slot(i);
            let mut rectangle = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(at)),
                    (bar.value, SegmentValue::Exact(at + 1)),
                ],
                colour.mix(0.8).filled(),
            );
            rectangle.set_margin(7, 7, 0, 0);
            chart
                .draw_series(std::iter::once(rectangle))
                .map_err(drawing)?;
            let centre = SegmentValue::CenterOf(at);
            if let Some(interval) = bar.interval {
                let whisker = BLACK.stroke_width(2);
                chart
                    .draw_series([PathElement::new(
                        vec![
                            (interval.low, centre.clone()),
                            (interval.high, centre.clone()),
                        ],
                        whisker,
                    )])
                    .map_err(drawing)?;
                chart
                    .draw_series([interval.low, interval.high].map(|x| {
                        EmptyElement::at((x, centre.clone()))
                            + PathElement::new(vec![(0, -7), (0, 7)], whisker)
                    }))
                    .map_err(drawing)?;
            }
            let end_of_bar = bar.interval.map_or(bar.value, |i| i.high.max(bar.value));
            chart
                .draw_series(std::iter::once(Text::new(
                    format(bar.value),
                    (end_of_bar + end * 0.02, centre),
                    (FONT, LABEL_SIZE).into_font().color(&BLACK).pos(
                        plotters::style::text_anchor::Pos::new(
                            plotters::style::text_anchor::HPos::Left,
                            plotters::style::text_anchor::VPos::Center,
                        ),
                    ),
                )))
                .map_err(drawing)?;
        }
        root.present().map_err(drawing)?;
    }
    Ok(titled(svg, title))
}

/// An axis tick as a reader writes it: no trailing zeros, thousands separated (`0.5`, `80`,
/// `2,000`).
fn tick(value: f64) -> String {
    if value.abs() >= 1000.0 {
        return super::numbers::whole(value);
    }
    let text = format!("{value:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    match text {
        "-0" | "" => "0".into(),
        text => text.replace('-', "−"),
    }
}

/// The SVG with its title, for screen readers and as a tooltip: a `<title>` first inside it,
/// and `role="img"` with an `aria-label` on it.
fn titled(svg: String, title: &str) -> String {
    let escaped = title
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;");
    let Some(open_end) = svg.find('>') else {
        return svg;
    };
    format!(
        "{} role=\"img\" aria-label=\"{escaped}\"><title>{escaped}</title>{}",
        &svg[..open_end],
        &svg[open_end + 1..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(backend: &str, seed: u64, accuracies: &[f64]) -> RunRecord {
        let path = crate::workspace::repo_root().join("fixtures/records/v1-tch-mlp.json");
        let mut record = RunRecord::load(&path).unwrap();
        record.backend = backend.into();
        record.seed = seed;
        let template = record.epochs[0].clone();
        record.epochs = accuracies
            .iter()
            .enumerate()
            .map(|(i, &accuracy)| EpochRecord {
                epoch: i as u32 + 1,
                test_accuracy: accuracy,
                elapsed_training_seconds: (i + 1) as f64 * (1.0 + seed as f64 * 0.1),
                ..template.clone()
            })
            .collect();
        record
    }

    /// Every pair of the registry's colours stays apart, CIEDE2000 at least 10, in normal
    /// vision and in simulated protanopia, deuteranopia and tritanopia.
    #[test]
    fn colours_stay_apart_in_every_colour_vision() {
        let colours: Vec<(String, RGBColor)> = parallax_registry::BACKENDS
            .iter()
            .map(|entry| (entry.name.to_string(), colour(entry.name)))
            .collect();
        let (smallest, between) = smallest_difference(&colours);
        eprintln!("smallest CIEDE2000: {smallest:.1}, {between}");
        assert!(smallest >= DISTINCT, "{smallest:.1} between {between}");
        // The measure tells two near colours apart from two far ones.
        let near = [
            ("a".to_string(), RGBColor(0x00, 0x72, 0xb2)),
            ("b".to_string(), RGBColor(0x10, 0x72, 0xb2)),
        ];
        assert!(smallest_difference(&near).0 < 5.0);
    }

    /// Each backend's line has its own dash pattern and marker, so that lines that coincide,
    /// or print in grey, stay apart.
    #[test]
    fn every_backend_has_its_own_dash_and_marker() {
        let strokes: Vec<Stroke> = parallax_registry::BACKENDS
            .iter()
            .map(|entry| stroke(entry.name))
            .collect();
        for (i, a) in strokes.iter().enumerate() {
            for b in &strokes[i + 1..] {
                assert!(a.dash != b.dash && a.marker != b.marker, "{a:?} and {b:?}");
            }
        }
    }

    #[test]
    fn ticks_read_without_trailing_zeros() {
        assert_eq!(tick(80.0), "80");
        assert_eq!(tick(0.5), "0.5");
        assert_eq!(tick(0.875), "0.875");
        assert_eq!(tick(2000.0), "2,000");
        assert_eq!(tick(-0.0), "0");
        assert_eq!(tick(-1.5), "−1.5");
    }

    /// Lines within a line's width of one another at every point are named as coinciding;
    /// a line that parts from them at one point is not.
    #[test]
    fn coinciding_lines_are_found() {
        let runs = [
            record("burn", 1, &[0.5, 0.7, 0.8]),
            record("tch", 1, &[0.5, 0.7, 0.8]),
            record("tf", 1, &[0.5, 0.7, 0.8 + 1e-4]),
            record("pytorch", 1, &[0.5, 0.6, 0.8]),
        ];
        let refs: Vec<&RunRecord> = runs.iter().collect();
        let bands = bands(&refs, |e| f64::from(e.epoch), |e| e.test_accuracy);
        assert_eq!(coinciding(&bands), vec![vec!["burn", "tch", "tf"]]);
    }

    #[test]
    fn a_band_spans_the_seeds_and_its_x_is_their_median() {
        let runs = [
            record("tch", 1, &[0.5, 0.7]),
            record("tch", 2, &[0.6, 0.8]),
            record("tch", 3, &[0.7]),
            record("tf", 1, &[0.4, f64::NAN]),
        ];
        let refs: Vec<&RunRecord> = runs.iter().collect();
        let bands = bands(&refs, |e| e.elapsed_training_seconds, |e| e.test_accuracy);
        assert_eq!(bands.len(), 2);
        let first = bands[0].points[0];
        assert_eq!((first.low, first.high, first.seeds), (0.5, 0.7, 3));
        assert!((first.mean - 0.6).abs() < 1e-12);
        assert!((first.x - 1.2).abs() < 1e-12, "{first:?}");
        // The run that stopped after one epoch counts only there.
        assert_eq!(bands[0].points[1].seeds, 2);
        // A NaN is left out rather than drawn.
        assert_eq!(bands[1].points.len(), 1);
    }

    #[test]
    fn charts_are_svg_with_every_backend_named_and_escaped() {
        let runs = [
            record("tch", 1, &[0.5, 0.7]),
            record("<tf>", 1, &[0.4, 0.6]),
        ];
        let refs: Vec<&RunRecord> = runs.iter().collect();
        let bands = bands(&refs, |e| e.elapsed_training_seconds, |e| e.test_accuracy);
        let svg = line_chart(
            "Accuracy & <time>",
            "training seconds",
            "test accuracy",
            &bands,
            XAxis::Seconds,
        )
        .unwrap();
        assert!(
            svg.contains("aria-label=\"Accuracy &amp; &lt;time&gt;\"")
                && svg.contains("<title>Accuracy &amp; &lt;time&gt;</title>"),
            "{svg}"
        );
        assert!(svg.starts_with("<svg"), "{svg}");
        let bars = [
            Bar {
                backend: "tch".into(),
                value: 2.0,
                interval: Some(Interval {
                    low: 1.5,
                    high: 2.5,
                }),
            },
            Bar {
                backend: "<tf>".into(),
                value: 3.0,
                interval: None,
            },
        ];
        let svg = bar_chart("Time per epoch", "seconds", &bars, &|v| format!("{v:.2}")).unwrap();
        assert!(svg.contains("2.00") && svg.contains("3.00") && svg.contains("\ntch\n</text>"));
        assert!(svg.contains("&lt;tf&gt;") && !svg.contains("<tf>"), "{svg}");
    }
}
