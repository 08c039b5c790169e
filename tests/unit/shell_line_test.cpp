// The pure helpers of the shell's line editor: words, commands, completion.

#include "tools/shell/line_editor.hpp"

#include <gtest/gtest.h>

using namespace troupe::tools::shell;
using words = std::vector<std::string>;

namespace {

words tok(std::string_view line) {
  std::string err = "stale";
  auto out = tokenize(line, err);
  EXPECT_EQ(err, "") << "for: " << line;
  return out;
}

std::string tok_error(std::string_view line) {
  std::string err;
  auto out = tokenize(line, err);
  EXPECT_TRUE(out.empty()) << "for: " << line;
  return err;
}

} // namespace

TEST(ShellTokenize, SplitsOnBlanks) {
  EXPECT_EQ(tok("inspect run  r-1"), (words{"inspect", "run", "r-1"}));
  EXPECT_EQ(tok("  \tactors\t "), (words{"actors"}));
  EXPECT_EQ(tok(""), words{});
  EXPECT_EQ(tok("   "), words{});
  EXPECT_EQ(tok("a\nb"), (words{"a", "b"}));
}

TEST(ShellTokenize, KeepsQuotedTextTogether) {
  EXPECT_EQ(tok("say 'hello world'"), (words{"say", "hello world"}));
  EXPECT_EQ(tok(R"(say "hello world")"), (words{"say", "hello world"}));
  // Quotes inside one another are plain characters.
  EXPECT_EQ(tok(R"('a "b" c' "d 'e' f")"), (words{"a \"b\" c", "d 'e' f"}));
  // Quoted parts join the text around them.
  EXPECT_EQ(tok(R"(ab'c d'"e"f)"), (words{"abc def"}));
  // Empty quotes are an empty word.
  EXPECT_EQ(tok("set x ''"), (words{"set", "x", ""}));
  EXPECT_EQ(tok(R"("")"), (words{""}));
}

TEST(ShellTokenize, HandlesBackslashes) {
  EXPECT_EQ(tok(R"(a\ b c)"), (words{"a b", "c"}));
  EXPECT_EQ(tok(R"(\'x\" \\)"), (words{"'x\"", "\\"}));
  // In double quotes only \" and \\ are escapes.
  EXPECT_EQ(tok(R"("a\"b\\c\n")"), (words{"a\"b\\c\\n"}));
  // In single quotes nothing is.
  EXPECT_EQ(tok(R"('a\b')"), (words{"a\\b"}));
  // A backslash-newline joins lines.
  EXPECT_EQ(tok("inspect \\\nrun"), (words{"inspect", "run"}));
  EXPECT_EQ(tok("ins\\\npect"), (words{"inspect"}));
}

TEST(ShellTokenize, NamesTheColumnOfAnUnterminatedQuote) {
  EXPECT_EQ(tok_error("say 'hello"), "unterminated single quote at column 5");
  EXPECT_EQ(tok_error(R"(a "b" "c)"), "unterminated double quote at column 7");
  EXPECT_EQ(tok_error(R"("a\")"), "unterminated double quote at column 1");
  // Columns count characters, not bytes.
  EXPECT_EQ(tok_error("é 'x"), "unterminated single quote at column 3");
  EXPECT_EQ(tok_error("run \\"), "trailing backslash at column 5");
}

TEST(ShellTokenize, ClearsTheErrorOnSuccess) {
  std::string err;
  EXPECT_TRUE(tokenize("'", err).empty());
  EXPECT_FALSE(err.empty());
  EXPECT_EQ(tokenize("ok", err), words{"ok"});
  EXPECT_EQ(err, "");
}

TEST(ShellSplitCommands, SplitsOnSemicolonsAndNewlines) {
  EXPECT_EQ(split_commands("actors; inspect run r1\nhelp"),
            (words{"actors", "inspect run r1", "help"}));
  EXPECT_EQ(split_commands(";;  ;\n\n  actors  ;"), (words{"actors"}));
  EXPECT_EQ(split_commands(""), words{});
  EXPECT_EQ(split_commands("\r\n"), words{});
}

TEST(ShellSplitCommands, KeepsSeparatorsInsideQuotesAndEscapes) {
  EXPECT_EQ(split_commands(R"(say 'a;b'; say "c;d"; say e\;f)"),
            (words{"say 'a;b'", R"(say "c;d")", R"(say e\;f)"}));
  EXPECT_EQ(split_commands("say 'line\nbreak'; next"),
            (words{"say 'line\nbreak'", "next"}));
  EXPECT_EQ(split_commands(R"(say "q\"; x"; y)"),
            (words{R"(say "q\"; x")", "y"}));
  // The pieces tokenize back into the intended words.
  std::string err;
  EXPECT_EQ(tokenize(split_commands(R"(say e\;f)").at(0), err),
            (words{"say", "e;f"}));
}

TEST(ShellSplitCommands, DropsComments) {
  EXPECT_EQ(split_commands("# setup\nactors # all of them; not a command\n"
                           "  # indented\nhelp"),
            (words{"actors", "help"}));
  // A # inside a word or quotes is text.
  EXPECT_EQ(split_commands("inspect run#1; say '#x' \"#y\" \\#z"),
            (words{"inspect run#1", R"(say '#x' "#y" \#z)"}));
  EXPECT_EQ(split_commands("a;#b\nc"), (words{"a", "c"}));
}

TEST(ShellContinuesOnNextLine, OnlyInsideQuotesOrAfterABackslash) {
  EXPECT_FALSE(continues_on_next_line(""));
  EXPECT_FALSE(continues_on_next_line("stats"));
  EXPECT_FALSE(continues_on_next_line("say 'a;b'; say \"c\\\"d\""));
  EXPECT_TRUE(continues_on_next_line("say 'line"));
  EXPECT_TRUE(continues_on_next_line("say \"line"));
  EXPECT_TRUE(continues_on_next_line("say \"a\\"));
  EXPECT_TRUE(continues_on_next_line("inspect run \\"));
  EXPECT_FALSE(continues_on_next_line("inspect run \\\\"));
  EXPECT_FALSE(continues_on_next_line("say \\'"));
  // Quotes in a comment are text.
  EXPECT_FALSE(continues_on_next_line("stats # it's live"));
  EXPECT_TRUE(continues_on_next_line("say it#'s"));
  // Lines joined where it said so read back as split_commands reads them.
  EXPECT_FALSE(continues_on_next_line("say 'line\nbreak'"));
  EXPECT_EQ(split_commands("say 'line\nbreak'"), (words{"say 'line\nbreak'"}));
}

TEST(ShellCommonPrefix, FindsTheSharedStart) {
  EXPECT_EQ(common_prefix({}), "");
  EXPECT_EQ(common_prefix({"history"}), "history");
  EXPECT_EQ(common_prefix({"help", "history"}), "h");
  EXPECT_EQ(common_prefix({"inspect", "insert", "ins"}), "ins");
  EXPECT_EQ(common_prefix({"abc", "xyz"}), "");
  EXPECT_EQ(common_prefix({"", "a"}), "");
}

TEST(ShellCommonPrefix, NeverSplitsACharacter) {
  // "é" is C3 A9 and "è" is C3 A8: they share a byte, not a character.
  EXPECT_EQ(common_prefix({"café", "cafè"}), "caf");
  EXPECT_EQ(common_prefix({"日本", "日曜"}), "日");
}

TEST(ShellCompleteWord, MatchesPrefixesSortedAndUnique) {
  words commands{"quit", "inspect", "history", "help", "actors", "help"};
  EXPECT_EQ(complete_word("h", commands), (words{"help", "history"}));
  EXPECT_EQ(complete_word("ins", commands), (words{"inspect"}));
  EXPECT_EQ(complete_word("", commands),
            (words{"actors", "help", "history", "inspect", "quit"}));
  EXPECT_EQ(complete_word("x", commands), words{});
  EXPECT_EQ(complete_word("help", commands), words{"help"});
  EXPECT_EQ(complete_word("a", {}), words{});
}

TEST(ShellQuoteWord, QuotesOnlyWhenNeeded) {
  EXPECT_EQ(quote_word("breaker"), "breaker");
  EXPECT_EQ(quote_word("run-1/a.b:c=d@e"), "run-1/a.b:c=d@e");
  EXPECT_EQ(quote_word("naïve"), "naïve");
  EXPECT_EQ(quote_word(""), "''");
  EXPECT_EQ(quote_word("a b"), "'a b'");
  EXPECT_EQ(quote_word("it's"), R"('it'\''s')");
  // Whatever it returns reads back as the same single word.
  std::string err;
  for (std::string w : {"a b", "it's", "x;y", "#z", "\"q\"", "back\\slash", ""})
    EXPECT_EQ(tokenize(quote_word(w), err), words{w}) << w;
}

TEST(ShellWordsBefore, LeavesOutTheWordAtTheCursor) {
  EXPECT_EQ(words_before(""), words{});
  EXPECT_EQ(words_before("ins"), words{});
  EXPECT_EQ(words_before("inspect "), words{"inspect"});
  EXPECT_EQ(words_before("inspect b"), words{"inspect"});
  EXPECT_EQ(words_before("inspect 'run 1' "), (words{"inspect", "run 1"}));
  // An open quote is the word being typed.
  EXPECT_EQ(words_before("inspect \"br"), words{"inspect"});
  EXPECT_EQ(words_before("inspect ''"), words{"inspect"});
}

TEST(ShellFormatCandidates, UsesOneLineWhenItFits) {
  EXPECT_EQ(format_candidates({"help", "history"}, 80), "help  history\n");
  EXPECT_EQ(format_candidates({}, 80), "");
  EXPECT_EQ(format_candidates({"only"}, 80), "only\n");
}

TEST(ShellFormatCandidates, FillsColumnsTopToBottom) {
  // Seven words of up to 5 columns in 20 columns: columns 7 wide, 3 a row.
  EXPECT_EQ(
    format_candidates({"a", "bb", "ccc", "dddd", "eeeee", "f", "g"}, 20),
    "a      dddd   g\n"
    "bb     eeeee\n"
    "ccc    f\n");
  // A word wider than the terminal still gets a row of its own.
  EXPECT_EQ(format_candidates({"abcdefgh", "ijklmnop"}, 8),
            "abcdefgh\nijklmnop\n");
}
