//! The files `cargo xtask gradcam` writes: one PNG per image, `maps.safetensors`,
//! `summary.json` and the Markdown report.

use std::path::Path;

use embedded_graphics::mono_font::MonoTextStyle;
use embedded_graphics::mono_font::ascii::{FONT_6X10, FONT_10X20};
use embedded_graphics::pixelcolor::{Rgb888, RgbColor};
use embedded_graphics::prelude::{DrawTarget, OriginDimensions, Point, Size};
use embedded_graphics::text::Text;
use embedded_graphics::{Drawable, Pixel};
use image::{Rgb, RgbImage};
use ndarray::{Array3, ArrayView2, Axis};
use parallax_core::gradcam::CamSettings;
use parallax_core::gradcam::job::CamResult;
use parallax_core::record::write_json_atomically;
use parallax_core::weights::Weights;

use super::Inputs;
use super::analysis::Maps;
use crate::error::{Error, Result};
use crate::report::summary::GradCamSummary;

/// matplotlib's `jet`, piecewise linear.
pub(crate) fn jet(value: f32) -> [f32; 3] {
    let v = value.clamp(0.0, 1.0);
    let channel = |centre: f32| (1.5 - (4.0 * v - centre).abs()).clamp(0.0, 1.0);
    [channel(3.0), channel(2.0), channel(1.0)]
}

/// The colour map of GradCAM's overlays.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ColourMap {
    /// Google's Turbo: ordered in lightness where jet is not, with jet's range of hues.
    #[default]
    Turbo,
    /// matplotlib's viridis: perceptually uniform, readable in grey and by colour-blind eyes.
    Viridis,
    /// matplotlib's jet, as most published GradCAM figures use it (not perceptually ordered).
    Jet,
}

impl ColourMap {
    /// The colour of `value` in [0, 1], as RGB in [0, 1].
    pub(crate) fn colour(self, value: f32) -> [f32; 3] {
        let v = value.clamp(0.0, 1.0);
        let gradient = match self {
            ColourMap::Jet => return jet(v),
            ColourMap::Turbo => colorous::TURBO,
            ColourMap::Viridis => colorous::VIRIDIS,
        };
        let colorous::Color { r, g, b } = gradient.eval_continuous(f64::from(v));
        [r, g, b].map(|c| f32::from(c) / 255.0)
    }

    /// The map's name, as a legend writes it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            ColourMap::Turbo => "turbo",
            ColourMap::Viridis => "viridis",
            ColourMap::Jet => "jet",
        }
    }
}

/// The difference panel's colour: white at 0 to black at the largest difference (ColorBrewer's
/// greys), a scale of its own, so that a difference of 1e-4 still shows and none shows white.
fn difference_colour(value: f32) -> [f32; 3] {
    let colorous::Color { r, g, b } =
        colorous::GREYS.eval_continuous(f64::from(value.clamp(0.0, 1.0)));
    [r, g, b].map(|c| f32::from(c) / 255.0)
}

/// An `RgbImage` as an embedded-graphics target, for the captions.
struct Canvas<'a>(&'a mut RgbImage);

impl OriginDimensions for Canvas<'_> {
    fn size(&self) -> Size {
        Size::new(self.0.width(), self.0.height())
    }
}

impl DrawTarget for Canvas<'_> {
    type Color = Rgb888;
    type Error = std::convert::Infallible;

    fn draw_iter<I: IntoIterator<Item = Pixel<Rgb888>>>(
        &mut self,
        pixels: I,
    ) -> Result<(), Self::Error> {
        for Pixel(point, colour) in pixels {
            if let (Ok(x), Ok(y)) = (u32::try_from(point.x), u32::try_from(point.y))
                && x < self.0.width()
                && y < self.0.height()
            {
                self.0
                    .put_pixel(x, y, Rgb([colour.r(), colour.g(), colour.b()]));
            }
        }
        Ok(())
    }
}

/// Height of the caption strip under the panels: two lines of a 10×20 font.
const CAPTION_HEIGHT: u32 = 48;
/// Height of the colour bars under the captions, with their labels.
const SCALE_HEIGHT: u32 = 40;

/// One panel per column: the input, each backend's overlay (`colours` at 50%), and the
/// absolute difference between the first two backends' maps on a scale of its own, from 0 to
/// its largest value, which the panel prints; under each its caption (`captions[panel]`, up to
/// two lines), then a colour bar for the maps and one for the difference.
pub(crate) fn composite(
    input: &Array3<f32>,
    maps: &[ArrayView2<f32>],
    magnify: u32,
    captions: &[String],
    colours: ColourMap,
) -> RgbImage {
    let (_, height, width) = input.dim();
    let panels = 1 + maps.len() + usize::from(maps.len() >= 2);
    let gap = 6;
    let (panel_w, panel_h) = (width as u32 * magnify, height as u32 * magnify);
    let mut canvas = RgbImage::from_pixel(
        panels as u32 * (panel_w + gap) - gap,
        panel_h + CAPTION_HEIGHT + SCALE_HEIGHT,
        Rgb([255, 255, 255]),
    );
    let pixel = |rgb: [f32; 3]| Rgb(rgb.map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8));
    let draw = |canvas: &mut RgbImage, panel: usize, colour: &dyn Fn(usize, usize) -> [f32; 3]| {
        let x0 = panel as u32 * (panel_w + gap);
        for y in 0..panel_h {
            for x in 0..panel_w {
                let (row, column) = ((y / magnify) as usize, (x / magnify) as usize);
                canvas.put_pixel(x0 + x, y, pixel(colour(row, column)));
            }
        }
    };
    let base = |row: usize, column: usize| [0, 1, 2].map(|c| input[[c, row, column]]);
    draw(&mut canvas, 0, &base);
    for (index, map) in maps.iter().enumerate() {
        draw(&mut canvas, 1 + index, &|row, column| {
            let heat = colours.colour(map[[row, column]]);
            let image = base(row, column);
            [0, 1, 2].map(|c| 0.5 * heat[c] + 0.5 * image[c])
        });
    }
    let largest = if maps.len() >= 2 {
        let largest = maps[0]
            .iter()
            .zip(maps[1].iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0_f32, f32::max);
        draw(&mut canvas, 1 + maps.len(), &|row, column| {
            let difference = (maps[0][[row, column]] - maps[1][[row, column]]).abs();
            difference_colour(if largest > 0.0 {
                difference / largest
            } else {
                0.0
            })
        });
        Some(largest)
    } else {
        None
    };
    let style = MonoTextStyle::new(&FONT_10X20, Rgb888::BLACK);
    let small = MonoTextStyle::new(&FONT_6X10, Rgb888::BLACK);
    // A panel holds one character per 10 pixels; longer captions are cut.
    let room = (panel_w / 10) as usize;
    for (panel, caption) in captions.iter().enumerate().take(panels) {
        let x = (panel as u32 * (panel_w + gap)) as i32;
        for (line, text) in caption.lines().take(2).enumerate() {
            let text: String = text.chars().take(room).collect();
            let origin = Point::new(x + 2, (panel_h + 18 + 21 * line as u32) as i32);
            // Drawing into memory cannot fail.
            let _ = Text::new(&text, origin, style).draw(&mut Canvas(&mut canvas));
        }
    }
    // The colour bars: the maps' under the overlays, the difference's under its panel.
    let bar_top = panel_h + CAPTION_HEIGHT;
    let bar = |canvas: &mut RgbImage, x0: u32, length: u32, colour: &dyn Fn(f32) -> [f32; 3]| {
        for x in 0..length {
            let rgb = pixel(colour(x as f32 / (length.max(2) - 1) as f32));
            for y in bar_top..bar_top + 10 {
                canvas.put_pixel(x0 + x, y, rgb);
            }
        }
    };
    if !maps.is_empty() {
        let x0 = panel_w + gap;
        let length = (maps.len() as u32 * (panel_w + gap) - gap).min(panel_w * 2);
        bar(&mut canvas, x0, length, &|v| colours.colour(v));
        let label = format!("{}: 0 to 1, at 50% over the input", colours.name());
        let _ = Text::new("0", Point::new(x0 as i32, (bar_top + 22) as i32), small)
            .draw(&mut Canvas(&mut canvas));
        let _ = Text::new(
            "1",
            Point::new((x0 + length - 6) as i32, (bar_top + 22) as i32),
            small,
        )
        .draw(&mut Canvas(&mut canvas));
        let _ = Text::new(&label, Point::new(x0 as i32, (bar_top + 34) as i32), small)
            .draw(&mut Canvas(&mut canvas));
    }
    if let Some(largest) = largest {
        let x0 = (1 + maps.len() as u32) * (panel_w + gap);
        bar(&mut canvas, x0, panel_w, &difference_colour);
        let top = if largest > 0.0 {
            format!("{largest:.2e}")
        } else {
            "0".into()
        };
        let _ = Text::new("0", Point::new(x0 as i32, (bar_top + 22) as i32), small)
            .draw(&mut Canvas(&mut canvas));
        let _ = Text::new(
            &top,
            Point::new(
                (x0 + panel_w) as i32 - 6 * top.len() as i32,
                (bar_top + 22) as i32,
            ),
            small,
        )
        .draw(&mut Canvas(&mut canvas));
        let label = if largest > 0.0 {
            format!("|difference|, max {largest:.2e}")
        } else {
            "identical: |difference| = 0".to_string()
        };
        let _ = Text::new(&label, Point::new(x0 as i32, (bar_top + 34) as i32), small)
            .draw(&mut Canvas(&mut canvas));
    }
    canvas
}

/// Writes the PNGs, `maps.safetensors`, `summary.json` and `gradcam.md`.
pub(crate) fn write_outputs(
    out: &Path,
    inputs: &Inputs,
    results: &[CamResult],
    all: &[Maps],
    settings: &CamSettings,
    summary: &GradCamSummary,
    colours: ColourMap,
) -> Result<()> {
    let (_, _, height, _) = inputs.tensors.dim();
    let mut tensors = Weights::new();
    let magnify = (224 / height.max(1)).max(1) as u32;
    for (i, name) in inputs.names.iter().enumerate() {
        let input = inputs.tensors.index_axis(Axis(0), i).to_owned();
        tensors.insert(format!("{name}/input"), input.clone().into_dyn());
        for (result, maps) in results.iter().zip(all) {
            let backend = &result.backend;
            tensors.insert(
                format!("{name}/{backend}/raw"),
                maps.raw[i].map(settings.relu).into_dyn(),
            );
            tensors.insert(
                format!("{name}/{backend}/map"),
                maps.upsampled[i].values.clone().into_dyn(),
            );
            tensors.insert(
                format!("{name}/{backend}/logits"),
                ndarray::Array1::from(result.logits[i].clone()).into_dyn(),
            );
        }
        let display = inputs.display.to_display(&input);
        let panels: Vec<ArrayView2<f32>> = all
            .iter()
            .map(|maps| maps.upsampled[i].values.view())
            .collect();
        let mut captions = vec![format!("{name}\ninput")];
        for result in results {
            let backend = summary
                .images
                .get(i)
                .and_then(|image| image.backends.get(&result.backend));
            captions.push(match backend {
                Some(found) => format!(
                    "{}: class {} p={:.3}\n{}",
                    result.backend, found.class, found.score, found.class_name
                ),
                None => result.backend.clone(),
            });
        }
        if results.len() >= 2 {
            captions.push(format!(
                "|{} - {}|\nits own scale",
                results[0].backend, results[1].backend
            ));
        }
        let png = out.join(format!("{name}.png"));
        composite(&display, &panels, magnify, &captions, colours)
            .save(&png)
            .map_err(|source| Error::Image {
                path: png.clone(),
                source,
            })?;
    }
    tensors.save(&out.join("maps.safetensors"))?;
    write_json_atomically(&out.join("summary.json"), summary)?;
    let markdown = markdown(summary, results);
    let path = out.join("gradcam.md");
    std::fs::write(&path, &markdown).map_err(|source| Error::io("writing", &path, source))?;
    println!("{markdown}");
    println!("wrote {}", out.display());
    Ok(())
}

/// A statistic of a map, or `flat` when the map had nothing to measure.
pub(crate) fn number(value: Option<f64>) -> String {
    value.map_or_else(|| "flat".into(), |v| format!("{v:.4}"))
}

/// A figure that was not measured for this run (no box, no faithfulness) shows as a dash.
pub(crate) fn measured(value: Option<f64>, flat: bool) -> String {
    match value {
        Some(v) => format!("{v:.4}"),
        None if flat => "flat".into(),
        None => "–".into(),
    }
}

/// The Markdown report.
pub(crate) fn markdown(summary: &GradCamSummary, results: &[CamResult]) -> String {
    let mut text = format!(
        "# GradCAM: {} at `{}`\n\nWeights: {}. Preprocessing: {}. Settings: {:?}.\n\nEach image's PNG shows the input, then each backend's map over it (the {} colour map at 50%, in the order {}), then |first − second| on a scale of its own, from white at 0 to black at its largest value, which the panel prints.\n\n",
        summary.model,
        summary.layer,
        summary.weights,
        summary.preprocess,
        summary.settings,
        if summary.colour_map.is_empty() {
            "jet"
        } else {
            summary.colour_map.as_str()
        },
        results
            .iter()
            .map(|r| r.backend.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    text.push_str(&format!(
        "Smallest Pearson's r between two backends' layer-resolution maps: {}.\n\n",
        summary
            .min_raw_pearson()
            .map_or("undefined".into(), |r| format!("{r:.6}"))
    ));
    text.push_str(
        "| backend | engine | GradCAM s/image | faithfulness s/image |\n|---|---|---|---|\n",
    );
    for (backend, framework) in &summary.frameworks {
        text.push_str(&format!(
            "| {backend} | {framework} | {:.3} | {:.3} |\n",
            summary.seconds_per_image[backend], summary.faithfulness_seconds_per_image[backend]
        ));
    }
    text.push_str("\n## Agreement between backends\n\n| image | pair | basis | raw Pearson | raw Spearman | map Pearson | top-10% IoU | max |Δ| | α Pearson | logits rel. diff. | same class |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    for image in &summary.images {
        for pair in &image.pairs {
            text.push_str(&format!(
                "| {} | {}–{} | {} | {} | {} | {} | {:.3} | {:.2e} | {} | {:.2e} | {} |\n",
                image.name,
                pair.a,
                pair.b,
                pair.basis,
                number(pair.raw.pearson),
                number(pair.raw.spearman),
                number(pair.map.pearson),
                pair.map.top_k_iou[1],
                pair.map.max_abs_difference,
                number(pair.weights_pearson),
                pair.logits_relative_difference,
                pair.same_prediction
            ));
        }
    }
    text.push_str("\n## Each backend's maps\n\n| image | backend | class | score | entropy | Gini | area ≥ ½max | participation | pointing | argmax in box | deletion AUC | insertion AUC |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for image in &summary.images {
        for (backend, result) in &image.backends {
            text.push_str(&format!(
                "| {} | {backend} | {} {} | {:.3} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                image.name,
                result.class,
                result.class_name,
                result.score,
                number(result.spread_map.entropy),
                number(result.spread_map.gini),
                number(result.spread_map.area_above_half),
                number(result.spread_map.participation_ratio),
                measured(result.pointing, result.flat && image.bbox.is_some()),
                result.argmax_hit.map_or("–".into(), |hit| hit.to_string()),
                measured(result.deletion_auc, false),
                measured(result.insertion_auc, false),
            ));
        }
    }
    let localisation = summary.localisation();
    if !localisation.is_empty() {
        text.push_str("\n## Localisation\n\n| backend | energy pointing game | argmax hit rate |\n|---|---|---|\n");
        for (backend, (pointing, hits)) in &localisation {
            text.push_str(&format!("| {backend} | {pointing:.3} | {hits:.3} |\n"));
        }
    }
    if !summary.failures.is_empty() {
        text.push_str("\n## Failures\n\n");
        for (what, error) in &summary.failures {
            text.push_str(&format!("- {what}: {error}\n"));
        }
    }
    text
}
