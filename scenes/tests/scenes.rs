//! Scene generation: determinism, vocabulary, layers and the analyser on ground truth.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use veetance_scenes::analyse::analyse;
use veetance_scenes::{Colour, Position, Scene, Shape, Size, caption_words};

#[test]
fn same_seed_same_scene_and_pixels() {
    for seed in 0..20 {
        let a = Scene::random(seed);
        let b = Scene::random(seed);
        assert_eq!(a, b);
        assert_eq!(a.render(64).unwrap(), b.render(64).unwrap());
    }
    assert_ne!(Scene::random(1).caption(), Scene::random(2).caption());
}

#[test]
fn captions_use_only_the_vocabulary() {
    let words = caption_words();
    for seed in 0..500 {
        let scene = Scene::random(seed);
        let caption = scene.caption();
        for w in caption.split(' ') {
            assert!(words.contains(&w), "{w:?} in {caption:?}");
        }
        assert!(caption.ends_with(&format!("{} background", scene.background.name())));
        assert!(!caption.contains("a orange"), "{caption}");
        for o in &scene.objects {
            assert_ne!(o.colour, scene.background);
            if let Some(p) = o.position {
                assert_eq!(o.drawn_position(), p, "{caption}");
            }
        }
    }
}

#[test]
fn example_captions_have_the_documented_form() {
    let scene = Scene::single(
        Colour::Black,
        Shape::Star,
        Colour::Yellow,
        Some(Size::Small),
        Position::TopLeft,
        3,
    );
    assert_eq!(
        scene.caption(),
        "a small yellow star in the top left corner on a black background"
    );
}

#[test]
fn layers_composite_to_the_image_and_antialias() {
    let scene = Scene::random(11);
    let r = scene.render(64).unwrap();
    assert_eq!(r.layers.len(), 1 + scene.objects.len());
    assert!(r.layers[0].chunks(4).all(|p| p[3] == 255));
    let alpha: Vec<u8> = r.layers[1].chunks(4).map(|p| p[3]).collect();
    assert!(alpha.contains(&255));
    assert!(
        alpha.iter().any(|a| *a > 0 && *a < 255),
        "no antialiased edge"
    );
    assert!(Scene::random(0).render(4).is_err());
}

#[test]
fn analyser_reads_ground_truth() {
    let mut ok = 0;
    let mut total = 0;
    for (i, shape) in Shape::ALL.into_iter().enumerate() {
        for (j, position) in Position::ALL.into_iter().enumerate() {
            let bg = Colour::ALL[(i + j) % 10];
            let fg = Colour::ALL[(i + 2 * j + 1) % 10];
            if bg == fg {
                continue;
            }
            let size = [None, Some(Size::Small), Some(Size::Large)][j % 3];
            let scene = Scene::single(bg, shape, fg, size, position, (i * 9 + j) as u64);
            let r = scene.render(64).unwrap();
            let a = analyse(&r.rgb, 64).unwrap();
            total += 1;
            assert_eq!(a.background, bg);
            if a.object_colour == Some(fg) && a.object_position == Some(position) {
                ok += 1;
            }
        }
    }
    // Colour pairs close to each other (white/yellow, ...) may lose a few edge pixels, never the object.
    assert_eq!(ok, total, "{ok}/{total}");
}
