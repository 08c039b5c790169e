// A tiny REPL on line_editor for the pty tests: completes a fixed set of
// commands, prints each line it reads as "got: <line>", ends on `quit` or
// end of input. LINE_EDITOR_DEMO_HISTORY names the history file (none when
// unset); `history` prints the history, one entry a line.

#include "tools/shell/line_editor.hpp"

#include <cstdio>
#include <cstdlib>
#include <iostream>

using troupe::tools::shell::line_editor;
using troupe::tools::shell::words_before;

namespace {

std::vector<std::string> complete(const std::string& before,
                                  const std::string&) {
  auto words = words_before(before);
  if (words.empty())
    return {"actors", "inspect", "history", "help", "quit"};
  if (words.size() == 1 && words[0] == "inspect")
    return {"run", "node", "actor", "breaker"};
  return {};
}

} // namespace

int main() {
  const char* history = std::getenv("LINE_EDITOR_DEMO_HISTORY");
  line_editor editor{"troupe-demo", "demo> ", history ? history : "", complete};
  if (!editor.history_error().empty())
    std::cout << "note: " << editor.history_error() << std::endl;
  std::cout << (line_editor::interactive() ? "interactive" : "plain")
            << std::endl;
  while (auto line = editor.read_line()) {
    std::cout << "got: " << *line << std::endl;
    if (*line == "quit")
      return 0;
    if (*line == "history")
      for (auto& entry : editor.history())
        std::cout << "  " << entry << std::endl;
    if (!editor.history_error().empty())
      std::cout << "note: " << editor.history_error() << std::endl;
  }
  std::cout << "bye" << std::endl;
  return 0;
}
