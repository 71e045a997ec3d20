//! Figures without a plotting dependency: a chart is a list of shapes, written as SVG text or
//! rasterised into a PNG (encoded here with flate2's zlib and CRC-32, already dependencies;
//! text drawn with the bitmap font of [`crate::font`]).

use crate::font;
use flate2::write::ZlibEncoder;
use flate2::{Compression, Crc};
use std::io::Write;

/// An RGB colour.
pub type Rgb = [u8; 3];

pub const BLACK: Rgb = [0, 0, 0];
pub const GREY: Rgb = [160, 160, 160];
pub const WHITE: Rgb = [255, 255, 255];
/// Bar colours, one per experiment group.
pub const PALETTE: [Rgb; 4] = [[66, 133, 244], [219, 68, 55], [244, 180, 0], [15, 157, 88]];

/// Largest figure side, in pixels: bounds the raster's memory.
pub const SIDE_PX_MAX: u32 = 4_096;

#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    Rect {
        x: f64,
        y: f64,
        width: f64,
        height: f64,
        fill: Rgb,
    },
    Line {
        x1: f64,
        y1: f64,
        x2: f64,
        y2: f64,
        stroke: Rgb,
    },
    /// Text anchored at its middle (`x`) and baseline (`y`).
    Text {
        x: f64,
        y: f64,
        size: f64,
        text: String,
    },
    /// Text reading upwards (an axis label), centred on `y`, its baseline at `x`.
    TextUp {
        x: f64,
        y: f64,
        size: f64,
        text: String,
    },
}

/// Font pixels of the bitmap font per figure pixel for a text `size`: the 7-row glyphs
/// stand for about 7.5 units of size.
fn font_scale(size: f64) -> usize {
    (size / 7.5).round().max(1.0) as usize
}

#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub width_px: u32,
    pub height_px: u32,
    pub shapes: Vec<Shape>,
}

fn hex(c: Rgb) -> String {
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl Figure {
    pub fn to_svg(&self) -> String {
        let mut out = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\">\n<rect width=\"{w}\" height=\"{h}\" fill=\"#ffffff\"/>\n",
            w = self.width_px,
            h = self.height_px
        );
        for shape in &self.shapes {
            let line = match shape {
                Shape::Rect {
                    x,
                    y,
                    width,
                    height,
                    fill,
                } => format!(
                    "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{width:.1}\" height=\"{height:.1}\" fill=\"{}\"/>",
                    hex(*fill)
                ),
                Shape::Line {
                    x1,
                    y1,
                    x2,
                    y2,
                    stroke,
                } => format!(
                    "<line x1=\"{x1:.1}\" y1=\"{y1:.1}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\" stroke=\"{}\" stroke-width=\"1\"/>",
                    hex(*stroke)
                ),
                Shape::Text { x, y, size, text } => format!(
                    "<text x=\"{x:.1}\" y=\"{y:.1}\" font-size=\"{size:.0}\" text-anchor=\"middle\">{}</text>",
                    escape(text)
                ),
                Shape::TextUp { x, y, size, text } => format!(
                    "<text x=\"{x:.1}\" y=\"{y:.1}\" font-size=\"{size:.0}\" text-anchor=\"middle\" transform=\"rotate(-90 {x:.1} {y:.1})\">{}</text>",
                    escape(text)
                ),
            };
            out.push_str(&line);
            out.push('\n');
        }
        out.push_str("</svg>\n");
        out
    }

    /// The shapes rasterised (no anti-aliasing) as RGB rows.
    fn raster(&self) -> Vec<u8> {
        let (w, h) = (
            self.width_px.min(SIDE_PX_MAX) as usize,
            self.height_px.min(SIDE_PX_MAX) as usize,
        );
        let mut pixels = vec![255u8; w * h * 3];
        let mut fill = |x0: f64, y0: f64, x1: f64, y1: f64, c: Rgb| {
            let clamp = |v: f64, max: usize| (v.round().max(0.0) as usize).min(max);
            for y in clamp(y0.min(y1), h)..clamp(y0.max(y1), h) {
                for x in clamp(x0.min(x1), w)..clamp(x0.max(x1), w) {
                    let i = (y * w + x) * 3;
                    pixels[i..i + 3].copy_from_slice(&c);
                }
            }
        };
        for shape in &self.shapes {
            match *shape {
                Shape::Rect {
                    x,
                    y,
                    width,
                    height,
                    fill: c,
                } => fill(x, y, x + width, y + height, c),
                // Charts draw only horizontal and vertical lines: a one-pixel-wide rect.
                Shape::Line {
                    x1,
                    y1,
                    x2,
                    y2,
                    stroke,
                } => fill(
                    x1.min(x2),
                    y1.min(y2),
                    x1.max(x2) + 1.0,
                    y1.max(y2) + 1.0,
                    stroke,
                ),
                Shape::Text {
                    x,
                    y,
                    size,
                    ref text,
                } => {
                    let scale = font_scale(size);
                    let left = x - (font::text_width(text) * scale) as f64 / 2.0;
                    let top = y - (font::ASCENT * scale) as f64;
                    for (column, row) in font::ink(text) {
                        let (px, py) = (left + (column * scale) as f64, top + (row * scale) as f64);
                        fill(px, py, px + scale as f64, py + scale as f64, BLACK);
                    }
                }
                // Turned a quarter to the left: the text's columns run up the figure, its
                // rows to the right, the baseline at `x`.
                Shape::TextUp {
                    x,
                    y,
                    size,
                    ref text,
                } => {
                    let scale = font_scale(size);
                    let bottom = y + (font::text_width(text) * scale) as f64 / 2.0;
                    let left = x - (font::ASCENT * scale) as f64;
                    for (column, row) in font::ink(text) {
                        let (px, py) = (
                            left + (row * scale) as f64,
                            bottom - ((column + 1) * scale) as f64,
                        );
                        fill(px, py, px + scale as f64, py + scale as f64, BLACK);
                    }
                }
            }
        }
        pixels
    }

    /// An 8-bit RGB PNG of the shapes.
    pub fn to_png(&self) -> Vec<u8> {
        let (w, h) = (
            self.width_px.min(SIDE_PX_MAX),
            self.height_px.min(SIDE_PX_MAX),
        );
        let pixels = self.raster();
        let row = w as usize * 3;
        let mut filtered = Vec::with_capacity((row + 1) * h as usize);
        for line in pixels.chunks(row.max(1)) {
            filtered.push(0); // filter type: none
            filtered.extend_from_slice(line);
        }
        let mut zlib = ZlibEncoder::new(Vec::new(), Compression::default());
        // Writing into a Vec cannot fail.
        let idat = zlib
            .write_all(&filtered)
            .and_then(|()| zlib.finish())
            .unwrap_or_default();
        let mut ihdr = Vec::with_capacity(13);
        ihdr.extend_from_slice(&w.to_be_bytes());
        ihdr.extend_from_slice(&h.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit, RGB, deflate, no filter, no interlace
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        for (kind, data) in [(b"IHDR", &ihdr), (b"IDAT", &idat), (b"IEND", &Vec::new())] {
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            out.extend_from_slice(kind);
            out.extend_from_slice(data);
            let mut crc = Crc::new();
            crc.update(kind);
            crc.update(data);
            out.extend_from_slice(&crc.sum().to_be_bytes());
        }
        out
    }
}

/// One bar of a bar chart: a value with a range (whisker), in a colour group.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub label: String,
    pub value: f64,
    pub low: f64,
    pub high: f64,
    pub group: usize,
}

/// Lines a bar's label may take under its bar.
const LABEL_LINES_MAX: usize = 3;

/// `text` broken at spaces into lines of at most `width` characters (a longer word stands
/// alone), at most `lines_max` lines.
fn wrap(text: &str, width: usize, lines_max: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(line) if line.chars().count() + 1 + word.chars().count() <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_owned()),
        }
    }
    lines.truncate(lines_max);
    lines
}

/// A bar chart with whiskers, a reference line at `reference` (e.g. 100%), the value axis
/// labelled `axis_label`, and a legend naming the colour groups (`groups[bar.group]`).
pub fn bar_chart(
    title: &str,
    axis_label: &str,
    unit: &str,
    bars: &[Bar],
    groups: &[&str],
    reference: f64,
) -> Figure {
    let (left, top, bar_px, gap_px, plot_h) = (80.0, 40.0, 44.0, 26.0, 300.0);
    let (label_size, label_line_px) = (11.0, 13.0);
    let labels_h = label_line_px * LABEL_LINES_MAX as f64;
    let legend_y = top + plot_h + 16.0 + labels_h + 14.0;
    let width = (left + bars.len() as f64 * (bar_px + gap_px) + gap_px + 20.0).max(
        // The title must fit: about 6 pixels a character at size 11, 12 at size 15.
        title.chars().count() as f64 * 12.0 + 40.0,
    );
    let height = legend_y + 20.0;
    let max = bars
        .iter()
        .map(|b| b.high.max(b.value))
        .fold(reference, f64::max)
        * 1.1;
    let y_of = |v: f64| top + plot_h * (1.0 - (v / max).clamp(0.0, 1.0));
    let mut shapes = vec![
        Shape::Text {
            x: width / 2.0,
            y: 24.0,
            size: 15.0,
            text: title.to_owned(),
        },
        Shape::TextUp {
            x: 20.0,
            y: top + plot_h / 2.0,
            size: label_size,
            text: axis_label.to_owned(),
        },
    ];
    // Axis, gridlines every 25 units, labelled.
    let mut tick = 0.0;
    while tick <= max {
        shapes.push(Shape::Line {
            x1: left - 4.0,
            y1: y_of(tick),
            x2: width - 10.0,
            y2: y_of(tick),
            stroke: [230, 230, 230],
        });
        shapes.push(Shape::Text {
            x: left - 22.0,
            y: y_of(tick) + 4.0,
            size: label_size,
            text: format!("{tick:.0}{unit}"),
        });
        tick += 25.0;
    }
    let label_chars = ((bar_px + gap_px) / 6.0).floor() as usize;
    for (i, bar) in bars.iter().enumerate() {
        let x = left + gap_px + i as f64 * (bar_px + gap_px);
        let colour = PALETTE[bar.group % PALETTE.len()];
        shapes.push(Shape::Rect {
            x,
            y: y_of(bar.value),
            width: bar_px,
            height: y_of(0.0) - y_of(bar.value),
            fill: colour,
        });
        let middle = x + bar_px / 2.0;
        shapes.push(Shape::Line {
            x1: middle,
            y1: y_of(bar.high),
            x2: middle,
            y2: y_of(bar.low),
            stroke: BLACK,
        });
        for v in [bar.low, bar.high] {
            shapes.push(Shape::Line {
                x1: middle - 6.0,
                y1: y_of(v),
                x2: middle + 6.0,
                y2: y_of(v),
                stroke: BLACK,
            });
        }
        shapes.push(Shape::Text {
            x: middle,
            y: y_of(bar.high) - 6.0,
            size: label_size,
            text: format!("{:.0}", bar.value),
        });
        for (k, line) in wrap(&bar.label, label_chars, LABEL_LINES_MAX)
            .into_iter()
            .enumerate()
        {
            shapes.push(Shape::Text {
                x: middle,
                y: top + plot_h + 16.0 + label_line_px * k as f64,
                size: label_size,
                text: line,
            });
        }
    }
    // Legend: a swatch and the group's name, left to right.
    let mut x = left;
    for (group, name) in groups.iter().enumerate() {
        shapes.push(Shape::Rect {
            x,
            y: legend_y - 9.0,
            width: 10.0,
            height: 10.0,
            fill: PALETTE[group % PALETTE.len()],
        });
        let text_px = name.chars().count() as f64 * 6.0;
        shapes.push(Shape::Text {
            x: x + 14.0 + text_px / 2.0,
            y: legend_y,
            size: label_size,
            text: (*name).to_owned(),
        });
        x += 14.0 + text_px + 18.0;
    }
    shapes.push(Shape::Line {
        x1: left - 4.0,
        y1: y_of(reference),
        x2: width - 10.0,
        y2: y_of(reference),
        stroke: GREY,
    });
    shapes.push(Shape::Line {
        x1: left,
        y1: top,
        x2: left,
        y2: y_of(0.0),
        stroke: BLACK,
    });
    Figure {
        width_px: width.ceil() as u32,
        height_px: height.ceil() as u32,
        shapes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn chart() -> Figure {
        bar_chart(
            "t <1>",
            "machines",
            "%",
            &[
                Bar {
                    label: "shared".into(),
                    value: 100.0,
                    low: 98.0,
                    high: 103.0,
                    group: 0,
                },
                Bar {
                    label: "powers of two".into(),
                    value: 140.0,
                    low: 135.0,
                    high: 150.0,
                    group: 2,
                },
            ],
            &["exact", "rounded"],
            100.0,
        )
    }

    #[test]
    fn the_svg_has_every_shape_and_escapes_text() {
        let svg = chart().to_svg();
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("t &lt;1&gt;"));
        assert_eq!(
            svg.matches("<rect").count(),
            5,
            "background, two bars, two legend swatches"
        );
        assert!(svg.contains(">powers of<") && svg.contains(">two<"));
        assert!(svg.contains(">rounded<"));
        assert!(svg.contains("rotate(-90"));
    }

    #[test]
    fn labels_wrap_at_spaces() {
        assert_eq!(wrap("powers of two", 11, 3), ["powers of", "two"]);
        assert_eq!(wrap("reservations x", 5, 3), ["reservations", "x"]);
        assert_eq!(wrap("a b c d", 1, 3), ["a", "b", "c"]);
        assert!(wrap("", 5, 3).is_empty());
    }

    /// The ink of a raster: (x, y) of every black pixel.
    fn black_pixels(figure: &Figure) -> Vec<(usize, usize)> {
        let w = figure.width_px as usize;
        figure
            .raster()
            .chunks(3)
            .enumerate()
            .filter(|(_, p)| *p == BLACK)
            .map(|(i, _)| (i % w, i / w))
            .collect()
    }

    #[test]
    fn the_png_draws_text_with_the_bitmap_font() {
        let text = |shape| Figure {
            width_px: 20,
            height_px: 20,
            shapes: vec![shape],
        };
        // "1" at size 7 (one font pixel per pixel), centred on x 10, baseline at y 10: the
        // glyph's 5 columns start at 10 - 2.5, its 7 rows at 10 - 7.
        let upright = black_pixels(&text(Shape::Text {
            x: 10.5,
            y: 10.0,
            size: 7.0,
            text: "1".into(),
        }));
        let expected: Vec<(usize, usize)> = {
            let mut v: Vec<(usize, usize)> = font::ink("1").map(|(c, r)| (8 + c, 3 + r)).collect();
            v.sort_by_key(|&(x, y)| (y, x));
            v
        };
        assert_eq!(upright, expected);
        // Size 15 doubles every font pixel.
        let big = black_pixels(&text(Shape::Text {
            x: 10.0,
            y: 16.0,
            size: 15.0,
            text: "-".into(),
        }));
        assert_eq!(big.len(), 5 * 4);
        // Turned upwards, the dash becomes a vertical bar one pixel wide.
        let up = black_pixels(&text(Shape::TextUp {
            x: 10.0,
            y: 10.0,
            size: 7.0,
            text: "-".into(),
        }));
        assert_eq!(up.len(), 5);
        assert!(up.iter().all(|&(x, _)| x == up[0].0), "{up:?}");
    }

    #[test]
    fn the_png_decodes_to_the_raster() {
        let figure = chart();
        let png = figure.to_png();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[12..16], b"IHDR");
        assert_eq!(
            u32::from_be_bytes(png[16..20].try_into().unwrap()),
            figure.width_px
        );
        // The IDAT chunk inflates to one filter byte plus a row of RGB per line.
        let idat_len = u32::from_be_bytes(png[33..37].try_into().unwrap()) as usize;
        assert_eq!(&png[37..41], b"IDAT");
        let mut raw = Vec::new();
        flate2::read::ZlibDecoder::new(&png[41..41 + idat_len])
            .read_to_end(&mut raw)
            .unwrap();
        let row = figure.width_px as usize * 3 + 1;
        assert_eq!(raw.len(), row * figure.height_px as usize);
        // Some pixel carries the first bar's colour; the CRC of IHDR checks out.
        assert!(raw
            .chunks(row)
            .any(|line| line[1..].chunks(3).any(|p| p == PALETTE[0])));
        let mut crc = Crc::new();
        crc.update(&png[12..29]);
        assert_eq!(crc.sum().to_be_bytes(), png[29..33]);
        assert!(png.ends_with(&[0xae, 0x42, 0x60, 0x82]), "IEND's CRC");
    }
}
