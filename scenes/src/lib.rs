//! Procedural captioned scenes: one or two coloured shapes on a plain background.
//!
//! This is the training set of the built-in tiny model and the ground truth of its quality tests.
//! Everything is deterministic from a seed ([`Scene::random`]), so a dataset is just a range of
//! seeds: nothing is stored. A scene renders to an antialiased RGB image and to ground-truth layers
//! (an opaque background plus one straight-alpha RGBA layer per object) for layer-splitting tests.
//!
//! The vocabulary is fixed and small on purpose (ten colours, eight shapes, two sizes, nine
//! positions): captions are short, and a model a few megabytes large can learn all of it.
//!
//! ```
//! use veetance_scenes::Scene;
//! let scene = Scene::random(7);
//! let image = scene.render(64).expect("64 px is a valid size");
//! assert_eq!(image.rgb.len(), 64 * 64 * 3);
//! assert_eq!(image.layers.len(), 1 + scene.objects.len());
//! println!("{}", scene.caption());
//! ```

#![forbid(unsafe_code)]

pub mod analyse;
mod draw;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore as _, SeedableRng as _};

/// What can go wrong (only bad arguments: generation itself cannot fail).
#[derive(Debug, thiserror::Error)]
pub enum SceneError {
    /// Image side outside 8..=4096 pixels.
    #[error("image side {0} px is outside 8..=4096")]
    BadSize(usize),
}

/// The palette. RGB values are part of the contract: tests classify pixels by nearest colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Colour {
    /// (220, 40, 40)
    Red,
    /// (40, 180, 60)
    Green,
    /// (40, 80, 220)
    Blue,
    /// (240, 220, 40)
    Yellow,
    /// (140, 60, 200)
    Purple,
    /// (245, 140, 30)
    Orange,
    /// (245, 245, 245)
    White,
    /// (20, 20, 20)
    Black,
    /// (40, 210, 220)
    Cyan,
    /// (245, 130, 190)
    Pink,
}

impl Colour {
    /// Every colour, in palette order.
    pub const ALL: [Colour; 10] = [
        Colour::Red,
        Colour::Green,
        Colour::Blue,
        Colour::Yellow,
        Colour::Purple,
        Colour::Orange,
        Colour::White,
        Colour::Black,
        Colour::Cyan,
        Colour::Pink,
    ];

    /// sRGB value.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [220, 40, 40],
            Colour::Green => [40, 180, 60],
            Colour::Blue => [40, 80, 220],
            Colour::Yellow => [240, 220, 40],
            Colour::Purple => [140, 60, 200],
            Colour::Orange => [245, 140, 30],
            Colour::White => [245, 245, 245],
            Colour::Black => [20, 20, 20],
            Colour::Cyan => [40, 210, 220],
            Colour::Pink => [245, 130, 190],
        }
    }

    /// The caption word.
    pub fn name(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Green => "green",
            Colour::Blue => "blue",
            Colour::Yellow => "yellow",
            Colour::Purple => "purple",
            Colour::Orange => "orange",
            Colour::White => "white",
            Colour::Black => "black",
            Colour::Cyan => "cyan",
            Colour::Pink => "pink",
        }
    }

    /// The palette colour nearest to an RGB value (squared Euclidean distance).
    pub fn nearest(rgb: [f32; 3]) -> Colour {
        let dist = |c: Colour| -> f32 {
            let p = c.rgb();
            (0..3).map(|i| (rgb[i] - f32::from(p[i])).powi(2)).sum()
        };
        let mut best = Colour::Red;
        for c in Colour::ALL {
            if dist(c) < dist(best) {
                best = c;
            }
        }
        best
    }
}

/// Shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shape {
    /// A disc.
    Circle,
    /// An axis-aligned square.
    Square,
    /// An upward triangle.
    Triangle,
    /// A five-pointed star, one point up.
    Star,
    /// An annulus.
    Ring,
    /// A plus sign.
    Cross,
    /// A square standing on a corner.
    Diamond,
    /// A heart.
    Heart,
}

impl Shape {
    /// Every shape.
    pub const ALL: [Shape; 8] = [
        Shape::Circle,
        Shape::Square,
        Shape::Triangle,
        Shape::Star,
        Shape::Ring,
        Shape::Cross,
        Shape::Diamond,
        Shape::Heart,
    ];

    /// The caption word.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
            Shape::Star => "star",
            Shape::Ring => "ring",
            Shape::Cross => "cross",
            Shape::Diamond => "diamond",
            Shape::Heart => "heart",
        }
    }
}

/// Sizes named in captions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Size {
    /// Radius about 11 % of the image side.
    Small,
    /// Radius about 23 % of the image side.
    Large,
}

impl Size {
    /// Both sizes.
    pub const ALL: [Size; 2] = [Size::Small, Size::Large];

    /// The caption word.
    pub fn name(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Large => "large",
        }
    }
}

/// Positions named in captions: the cells of a 3×3 grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Position {
    /// Middle cell.
    Centre,
    /// Middle row, left column.
    Left,
    /// Middle row, right column.
    Right,
    /// Top row, middle column.
    Top,
    /// Bottom row, middle column.
    Bottom,
    /// Top-left cell.
    TopLeft,
    /// Top-right cell.
    TopRight,
    /// Bottom-left cell.
    BottomLeft,
    /// Bottom-right cell.
    BottomRight,
}

impl Position {
    /// Every position.
    pub const ALL: [Position; 9] = [
        Position::Centre,
        Position::Left,
        Position::Right,
        Position::Top,
        Position::Bottom,
        Position::TopLeft,
        Position::TopRight,
        Position::BottomLeft,
        Position::BottomRight,
    ];

    /// Grid cell `(column, row)`, each 0..3.
    pub fn cell(self) -> (usize, usize) {
        match self {
            Position::Centre => (1, 1),
            Position::Left => (0, 1),
            Position::Right => (2, 1),
            Position::Top => (1, 0),
            Position::Bottom => (1, 2),
            Position::TopLeft => (0, 0),
            Position::TopRight => (2, 0),
            Position::BottomLeft => (0, 2),
            Position::BottomRight => (2, 2),
        }
    }

    /// The position of a grid cell `(column, row)`; `None` outside the 3×3 grid.
    pub fn from_cell(column: usize, row: usize) -> Option<Position> {
        Position::ALL
            .into_iter()
            .find(|p| p.cell() == (column, row))
    }

    /// The caption phrase ("in the top left corner", "on the left", ...).
    pub fn phrase(self) -> &'static str {
        match self {
            Position::Centre => "in the centre",
            Position::Left => "on the left",
            Position::Right => "on the right",
            Position::Top => "at the top",
            Position::Bottom => "at the bottom",
            Position::TopLeft => "in the top left corner",
            Position::TopRight => "in the top right corner",
            Position::BottomLeft => "in the bottom left corner",
            Position::BottomRight => "in the bottom right corner",
        }
    }

    /// Centre of the cell as a fraction of the image side, `(x, y)` with y down.
    pub fn centre_frac(self) -> (f32, f32) {
        let (c, r) = self.cell();
        let at = |i: usize| 0.25 + 0.25 * i as f32;
        (at(c), at(r))
    }
}

/// One object of a scene.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// Shape.
    pub shape: Shape,
    /// Fill colour.
    pub colour: Colour,
    /// Size, if the caption names one (otherwise a radius between the two sizes).
    pub size: Option<Size>,
    /// Position, if the caption names one.
    pub position: Option<Position>,
    /// Where it is drawn: centre as fractions of the image side (y down).
    pub centre_frac: (f32, f32),
    /// Radius as a fraction of the image side.
    pub radius_frac: f32,
}

impl Object {
    /// The caption noun phrase: "a small yellow star in the top left corner".
    pub fn phrase(&self) -> String {
        let mut words: Vec<&str> = Vec::with_capacity(8);
        if let Some(size) = self.size {
            words.push(size.name());
        }
        words.push(self.colour.name());
        let article = if words[0].starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        };
        let mut s = format!("{article} {}", words.join(" "));
        s.push(' ');
        s.push_str(self.shape.name());
        if let Some(position) = self.position {
            s.push(' ');
            s.push_str(position.phrase());
        }
        s
    }

    /// The 3×3 grid cell the object is drawn in (where its centre lies).
    pub fn drawn_position(&self) -> Position {
        let cell = |f: f32| ((f * 3.0).floor().clamp(0.0, 2.0)) as usize;
        Position::from_cell(cell(self.centre_frac.0), cell(self.centre_frac.1))
            .unwrap_or(Position::Centre)
    }
}

/// A scene: a background colour and one or two objects.
#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    /// Background colour.
    pub background: Colour,
    /// Objects, drawn in order (later on top).
    pub objects: Vec<Object>,
}

/// A rendered scene.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// Side in pixels.
    pub side_px: usize,
    /// The composite, RGB8 row-major.
    pub rgb: Vec<u8>,
    /// Ground-truth layers, RGBA8 row-major with straight alpha: the opaque background first,
    /// then one layer per object in drawing order.
    pub layers: Vec<Vec<u8>>,
}

/// A small deterministic random source over ChaCha8.
struct Dice(ChaCha8Rng);

impl Dice {
    fn unit(&mut self) -> f32 {
        // 24 random bits: exactly representable in f32.
        (self.0.next_u32() >> 8) as f32 / (1u32 << 24) as f32
    }

    fn below(&mut self, n: usize) -> usize {
        ((self.0.next_u64() % n.max(1) as u64) as usize).min(n.saturating_sub(1))
    }

    fn chance(&mut self, p: f32) -> bool {
        self.unit() < p
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        items.get(self.below(items.len())).copied()
    }

    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }
}

fn radius_for(size: Option<Size>, dice: &mut Dice) -> f32 {
    match size {
        Some(Size::Small) => dice.range(0.10, 0.13),
        Some(Size::Large) => dice.range(0.21, 0.25),
        None => dice.range(0.14, 0.19),
    }
}

fn place(position: Position, radius: f32, dice: &mut Dice) -> (f32, f32) {
    let (x, y) = position.centre_frac();
    // A little jitter so that the model learns regions, not single pixels; kept inside the image.
    let jitter = 0.03;
    let clamp = |v: f32| v.clamp(radius, 1.0 - radius);
    (
        clamp(x + dice.range(-jitter, jitter)),
        clamp(y + dice.range(-jitter, jitter)),
    )
}

impl Scene {
    /// A random scene, the same for the same seed on every platform.
    ///
    /// Two thirds of scenes have one object, the rest two. One object: its size is named half of the
    /// time and its position two thirds of the time (unnamed: the centre). Two objects: either both
    /// positions are named (and differ) or neither is, and then the first is on the left and the
    /// second on the right. Object colours differ from the background and from each other.
    pub fn random(seed: u64) -> Scene {
        let mut dice = Dice(ChaCha8Rng::seed_from_u64(seed));
        let background = dice.pick(&Colour::ALL).unwrap_or(Colour::Black);
        let n_objects = if dice.chance(2.0 / 3.0) { 1 } else { 2 };
        let mut used = vec![background];
        let mut colour = |dice: &mut Dice| -> Colour {
            let free: Vec<Colour> = Colour::ALL
                .into_iter()
                .filter(|c| !used.contains(c))
                .collect();
            let c = dice.pick(&free).unwrap_or(Colour::White);
            used.push(c);
            c
        };
        let mut objects = Vec::with_capacity(n_objects);
        if n_objects == 1 {
            let size = dice.chance(0.5).then(|| dice.pick(&Size::ALL)).flatten();
            let position = dice
                .chance(2.0 / 3.0)
                .then(|| dice.pick(&Position::ALL))
                .flatten();
            let radius = radius_for(size, &mut dice);
            let shape = dice.pick(&Shape::ALL).unwrap_or(Shape::Circle);
            let colour = colour(&mut dice);
            let centre = place(position.unwrap_or(Position::Centre), radius, &mut dice);
            objects.push(Object {
                shape,
                colour,
                size,
                position,
                centre_frac: centre,
                radius_frac: radius,
            });
        } else {
            let named = dice.chance(0.5);
            let (first, second) = if named {
                let a = dice.pick(&Position::ALL).unwrap_or(Position::Left);
                let others: Vec<Position> = Position::ALL.into_iter().filter(|p| *p != a).collect();
                let b = dice.pick(&others).unwrap_or(Position::Right);
                (a, b)
            } else {
                (Position::Left, Position::Right)
            };
            for drawn_at in [first, second] {
                // Two objects share the image: sizes stay moderate so that they rarely overlap.
                let size = dice.chance(0.4).then_some(Size::Small);
                let radius = match size {
                    Some(_) => radius_for(size, &mut dice),
                    None => dice.range(0.13, 0.17),
                };
                let shape = dice.pick(&Shape::ALL).unwrap_or(Shape::Circle);
                let colour = colour(&mut dice);
                let centre = place(drawn_at, radius, &mut dice);
                objects.push(Object {
                    shape,
                    colour,
                    size,
                    position: named.then_some(drawn_at),
                    centre_frac: centre,
                    radius_frac: radius,
                });
            }
        }
        Scene {
            background,
            objects,
        }
    }

    /// A scene with one object at a named position, drawn as [`Scene::random`] would (same jitter
    /// and radius ranges from `seed`). Quality tests build their captions with this.
    pub fn single(
        background: Colour,
        shape: Shape,
        colour: Colour,
        size: Option<Size>,
        position: Position,
        seed: u64,
    ) -> Scene {
        let mut dice = Dice(ChaCha8Rng::seed_from_u64(seed));
        let radius = radius_for(size, &mut dice);
        let centre = place(position, radius, &mut dice);
        Scene {
            background,
            objects: vec![Object {
                shape,
                colour,
                size,
                position: Some(position),
                centre_frac: centre,
                radius_frac: radius,
            }],
        }
    }

    /// The caption: "a small yellow star in the top left corner on a black background".
    pub fn caption(&self) -> String {
        let parts: Vec<String> = self.objects.iter().map(Object::phrase).collect();
        let name = self.background.name();
        let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        };
        format!("{} on {article} {name} background", parts.join(" and "))
    }

    /// Draws the scene at `side_px`×`side_px` with 4×4 supersampled (antialiased) edges.
    pub fn render(&self, side_px: usize) -> Result<Rendered, SceneError> {
        if !(8..=4096).contains(&side_px) {
            return Err(SceneError::BadSize(side_px));
        }
        Ok(draw::render(self, side_px))
    }
}

/// Every word a caption can contain, sorted and deduplicated (the tiny model's tokenizer vocabulary).
pub fn caption_words() -> Vec<&'static str> {
    let mut words: Vec<&'static str> = vec!["a", "an", "and", "on", "background"];
    words.extend(Colour::ALL.iter().map(|c| c.name()));
    words.extend(Shape::ALL.iter().map(|s| s.name()));
    words.extend(Size::ALL.iter().map(|s| s.name()));
    for p in Position::ALL {
        words.extend(p.phrase().split(' '));
    }
    words.sort_unstable();
    words.dedup();
    words
}
