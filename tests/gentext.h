/* A text for the tests that need one (an essay haystack, training bytes), generated inside the test
 * so that no test depends on a text the repository does not ship (data/tinyshakespeare.txt is
 * fetched by scripts/get_data.sh, never by the tests). Pseudo-English: a fixed opening line, then
 * sentences of 4..15 words drawn from a fixed list by the tests' seeded RNG, capitalised, with
 * commas, line breaks and blank lines between paragraphs. Deterministic in (n_words, seed). */
#ifndef GDN2_TEST_GENTEXT_H
#define GDN2_TEST_GENTEXT_H

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "check.h"

/* The first words, with the irregular whitespace a real text has (two spaces, a line break, a blank
 * line); collapsed, they read GENTEXT_OPENING_COLLAPSED. They are GENTEXT_OPENING_WORDS words. */
#define GENTEXT_OPENING "The  quick brown fox\njumps over the lazy dog.\n\nA second line follows"
#define GENTEXT_OPENING_COLLAPSED "The quick brown fox jumps over the lazy dog. A second line follows"
#define GENTEXT_OPENING_WORDS 13

static const char *const gentext_words[] = {
    "the",    "a",      "of",    "and",    "to",     "in",     "that",   "his",    "her",     "my",     "your",
    "king",   "queen",  "lord",  "lady",   "friend", "house",  "night",  "day",    "heart",   "hand",   "word",
    "speak",  "hear",   "come",  "go",     "make",   "know",   "think",  "love",   "fear",    "keep",   "give",
    "good",   "noble",  "sweet", "old",    "young",  "true",   "fair",   "dark",   "little",  "great",  "poor",
    "now",    "then",   "here",  "there",  "never",  "ever",   "well",   "yet",    "so",      "not",    "with",
    "upon",   "before", "after", "under",  "against", "where", "when",   "what",   "who",     "which",  "city",
    "field",  "sea",    "crown", "sword",  "letter", "gold",   "bread",  "river",  "morning", "summer", "winter"};

/* Writes exactly n_words (>= GENTEXT_OPENING_WORDS) whitespace-separated words to path (created or
 * truncated). Returns 0, or -1 after a failed CHECK naming the path. */
static inline int test_write_text(const char *path, long n_words, unsigned long long seed) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        CHECK(0, "create the generated text %s", path);
        return -1;
    }
    const int nw = (int)(sizeof gentext_words / sizeof gentext_words[0]);
    fputs(GENTEXT_OPENING, f);
    long done = GENTEXT_OPENING_WORDS, left_in_sentence = 0, on_line = 0;
    while (done < n_words) {
        if (left_in_sentence == 0) { /* a new sentence: 4..15 words, capitalised */
            left_in_sentence = 4 + (long)(test_rng_next(&seed) % 12);
            fputs(".", f);
            unsigned long long r = test_rng_next(&seed) % 8;
            fputs(r == 0 ? "\n\n" : r < 4 ? "\n" : " ", f); /* paragraph, line, or run on */
            if (r < 4) on_line = 0;
            const char *w = gentext_words[test_rng_next(&seed) % nw];
            fputc(toupper((unsigned char)w[0]), f);
            fputs(w + 1, f);
        } else {
            fputs(test_rng_next(&seed) % 9 == 0 ? ", " : " ", f);
            if (on_line >= 12) fputs("\n", f), on_line = 0; /* verse-like lines */
            fputs(gentext_words[test_rng_next(&seed) % nw], f);
        }
        left_in_sentence--, done++, on_line++;
    }
    fputs(".\n", f);
    int bad = ferror(f);
    bad |= fclose(f) != 0;
    CHECK(!bad, "write the generated text %s (%ld words)", path, n_words);
    return bad ? -1 : 0;
}

#endif
