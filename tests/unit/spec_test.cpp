#include "runtime/spec/document.hpp"
#include "runtime/spec/inputs.hpp"
#include "runtime/spec/workflow_loader.hpp"
#include "tests/support/temp_dir.hpp"

#include <gtest/gtest.h>

using namespace troupe::runtime;
using namespace std::chrono_literals;

namespace {

/// All errors of `text` as "line:col path [code] message" lines.
std::string dump(const diagnostics& ds) {
  std::string s;
  for (auto& d : ds)
    s += std::to_string(d.line) + ":" + std::to_string(d.column) + " " + d.path
         + " [" + d.code + "] " + d.message + "\n";
  return s;
}

/// Returns the first error at `path` with `code` whose message holds
/// `fragment`, or null.
const diagnostic* find(const diagnostics& ds, const std::string& path,
                       const std::string& code,
                       const std::string& fragment = "") {
  for (auto& d : ds)
    if (d.path == path && d.code == code
        && d.message.find(fragment) != std::string::npos)
      return &d;
  return nullptr;
}

#define EXPECT_ERROR(outcome, path, code, fragment)                   \
  EXPECT_NE(find((outcome).errors, path, code, fragment), nullptr)    \
    << "no [" << code << "] at '" << path << "' saying '" << fragment \
    << "' in:\n"                                                      \
    << dump((outcome).errors)

const char* valid_yaml = R"(name: orders
version: 2
inputs:
  order_id: {type: string, required: true}
  qty: {type: integer, default: 1}
defaults:
  retry: {max_attempts: 4, initial_backoff: 100ms, max_backoff: 2s}
  timeout: 30s
max_concurrency: 4
nodes:
  reserve:
    kind: exec
    command: ["/bin/echo", "{{ inputs.order_id }}"]
    env: {QTY: "{{ inputs.qty }}"}
  charge:
    kind: fail
    after: [reserve]
    times: 1
    retry: {max_attempts: 2, jitter: none, non_retryable: [card_declined]}
    timeout: 5s
  ship:
    kind: sleep
    after: charge
    duration: 250ms
  done:
    kind: noop
    after: [ship]
    order: "{{ nodes.reserve.output.stdout }}"
    run: "{{ run.id }}/{{ node.id }}/{{ node.attempt }}"
outputs:
  order: "{{ nodes.done.output.order }}"
)";

} // namespace

TEST(WorkflowSpec, ParsesAValidWorkflow) {
  auto r = parse_workflow(valid_yaml);
  ASSERT_TRUE(r.ok()) << dump(r.errors);
  auto& wf = *r.workflow;
  EXPECT_EQ(wf.name, "orders");
  EXPECT_EQ(wf.version, "2");
  EXPECT_EQ(wf.max_concurrency, 4);
  ASSERT_EQ(wf.nodes.size(), 4u);
  // File order, not alphabetical.
  EXPECT_EQ(wf.nodes[0].id, "reserve");
  EXPECT_EQ(wf.nodes[3].id, "done");
  ASSERT_EQ(wf.inputs.size(), 2u);
  EXPECT_TRUE(wf.inputs[0].required || wf.inputs[1].required);
  auto* reserve = wf.find_node("reserve");
  EXPECT_EQ(reserve->retry.max_attempts, 4);
  EXPECT_EQ(reserve->retry.initial_backoff, 100ms);
  EXPECT_EQ(reserve->timeout, 30s);
  EXPECT_EQ(reserve->params["command"][0], "/bin/echo");
  // A node's retry overrides the defaults field by field.
  auto* charge = wf.find_node("charge");
  EXPECT_EQ(charge->retry.max_attempts, 2);
  EXPECT_EQ(charge->retry.initial_backoff, 100ms);
  EXPECT_EQ(charge->retry.max_backoff, 2s);
  EXPECT_EQ(charge->retry.jitter, jitter_mode::none);
  EXPECT_EQ(charge->retry.non_retryable,
            std::vector<std::string>{"card_declined"});
  EXPECT_EQ(charge->timeout, 5s);
  EXPECT_EQ(charge->params, nlohmann::json({{"times", 1}}));
  EXPECT_EQ(wf.find_node("ship")->after, std::vector<std::string>{"charge"});
  ASSERT_EQ(wf.outputs.size(), 1u);
}

TEST(WorkflowSpec, JsonAndYamlReadTheSame) {
  auto json_text = R"({"name": "j", "inputs": {"n": {"type": "integer",
    "default": 3}}, "nodes": {"a": {"kind": "noop", "v": "{{ inputs.n }}",
    "flag": true, "count": 7, "ratio": 0.5, "none": null, "s": "007"}}})";
  auto r = parse_workflow(json_text);
  ASSERT_TRUE(r.ok()) << dump(r.errors);
  auto& p = r.workflow->nodes[0].params;
  EXPECT_EQ(p["flag"], true);
  EXPECT_EQ(p["count"], 7);
  EXPECT_EQ(p["ratio"], 0.5);
  EXPECT_TRUE(p["none"].is_null());
  EXPECT_EQ(p["s"], "007"); // quoted stays a string
  auto yaml = parse_workflow("name: j\nnodes:\n  a: {kind: noop, s: '007', "
                             "n: 007, t: yes}\n");
  ASSERT_TRUE(yaml.ok()) << dump(yaml.errors);
  EXPECT_EQ(yaml.workflow->nodes[0].params["s"], "007");
  EXPECT_EQ(yaml.workflow->nodes[0].params["n"], 7);
  // YAML 1.2 core schema: "yes" is a string, not a boolean.
  EXPECT_EQ(yaml.workflow->nodes[0].params["t"], "yes");
}

// What an idempotency key compares: the workflow's content, not its text.
TEST(WorkflowSpec, SameWorkflowTextComparesContentNotLayout) {
  auto yaml = "name: w\nnodes:\n  a: {kind: noop}\n  b:\n    kind: noop\n"
              "    after: [a]\n";
  EXPECT_TRUE(same_workflow_text(yaml, yaml));
  // Comments, layout, key order, quoting, JSON or YAML: the same workflow.
  EXPECT_TRUE(same_workflow_text(
    yaml, "# a comment\nnodes:\n  b: {after: [\"a\"], kind: 'noop'}\n"
          "  a:\n    kind: noop\nname: \"w\"\n"));
  EXPECT_TRUE(
    same_workflow_text(yaml, R"({"name": "w", "nodes": {"a": {"kind": "noop"},
              "b": {"kind": "noop", "after": ["a"]}}})"));
  // Anchors and aliases are expanded before comparing.
  EXPECT_TRUE(same_workflow_text(
    "name: w\nnodes:\n  a: &n {kind: noop}\n  b: *n\n",
    "name: w\nnodes:\n  a: {kind: noop}\n  b: {kind: noop}\n"));
  // Another value, another name, another node: another workflow.
  EXPECT_FALSE(same_workflow_text(
    yaml, "name: w\nnodes:\n  a: {kind: noop}\n  b: {kind: noop}\n"));
  EXPECT_FALSE(same_workflow_text(
    yaml, "name: v\nnodes:\n  a: {kind: noop}\n  b:\n    kind: noop\n"
          "    after: [a]\n"));
  EXPECT_FALSE(same_workflow_text("name: w\nv: 1\n", "name: w\nv: '1'\n"));
  // Text that does not parse equals only itself.
  EXPECT_TRUE(same_workflow_text("name: [", "name: ["));
  EXPECT_FALSE(same_workflow_text("name: [", "name: [ "));
}

TEST(WorkflowSpec, SyntaxErrorsHaveLineAndColumn) {
  auto r = parse_workflow("name: x\nnodes:\n  a: {kind: noop\n  b: 1\n");
  ASSERT_EQ(r.errors.size(), 1u) << dump(r.errors);
  EXPECT_EQ(r.errors[0].code, "syntax");
  EXPECT_GT(r.errors[0].line, 2);
  auto j = parse_workflow("{\"name\": \"x\",\n \"nodes\": {\"a\": [}}");
  ASSERT_EQ(j.errors.size(), 1u);
  EXPECT_EQ(j.errors[0].code, "syntax");
  EXPECT_EQ(j.errors[0].line, 2);
}

TEST(WorkflowSpec, RejectsEmptyBinaryHugeAndNonUtf8Text) {
  EXPECT_EQ(parse_workflow("").errors.at(0).code, "empty");
  EXPECT_EQ(parse_workflow("# only a comment\n").errors.at(0).code, "empty");
  auto bin = parse_workflow(std::string("name: x\n\0\1\2", 11));
  EXPECT_EQ(bin.errors.at(0).code, "not_text");
  EXPECT_EQ(bin.errors.at(0).line, 2);
  EXPECT_EQ(parse_workflow("name: \xff\xfe\n").errors.at(0).code, "not_text");
  EXPECT_EQ(parse_workflow("name: \xed\xa0\x80\n").errors.at(0).code,
            "not_text"); // a UTF-16 surrogate
  std::string huge(max_workflow_bytes + 1, '#');
  auto h = parse_workflow(huge);
  EXPECT_EQ(h.errors.at(0).code, "too_large");
  EXPECT_NE(h.errors[0].message.find("10 MiB"), std::string::npos);
}

TEST(WorkflowSpec, RejectsHostileStructure) {
  // Deep nesting, alias blow-up ("billion laughs"), many documents,
  // duplicate and non-string keys.
  std::string deep = "name: x\nnodes: {a: {kind: noop, v: "
                     + std::string(500, '[') + std::string(500, ']') + "}}\n";
  auto d = parse_workflow(deep);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.errors[0].code, "too_deep") << dump(d.errors);
  deep = "name: x\nnodes: {a: {kind: noop, v: " + std::string(5000, '[')
         + std::string(5000, ']') + "}}\n";
  d = parse_workflow(deep);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.errors[0].code, "too_deep") << dump(d.errors);
  std::string laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n";
  for (char c = 'b'; c <= 'j'; ++c) {
    std::string prev(1, static_cast<char>(c - 1));
    laughs += std::string(1, c) + ": &" + c + " [*" + prev + ", *" + prev
              + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev
              + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev
              + "]\n";
  }
  auto l = parse_workflow(laughs);
  ASSERT_FALSE(l.ok());
  EXPECT_EQ(l.errors[0].code, "too_large") << dump(l.errors);
  auto m = parse_workflow("name: x\n---\nname: y\n");
  EXPECT_EQ(m.errors.at(0).code, "syntax");
  EXPECT_NE(m.errors[0].message.find("more than one"), std::string::npos);
  auto dup = parse_workflow("name: x\nname: y\nnodes: {a: {kind: noop}}\n");
  EXPECT_EQ(dup.errors.at(0).code, "duplicate_key");
  EXPECT_EQ(dup.errors[0].line, 2);
  auto key = parse_workflow("? [a, b]\n: 1\n");
  EXPECT_EQ(key.errors.at(0).code, "bad_key");
}

TEST(WorkflowSpec, ReportsTopLevelProblems) {
  auto r = parse_workflow("[1, 2]");
  EXPECT_EQ(r.errors.at(0).code, "type");
  r = parse_workflow("version: 1\nnmae: x\n");
  EXPECT_ERROR(r, "", "missing_field", "'name'");
  EXPECT_ERROR(r, "", "missing_field", "'nodes'");
  EXPECT_ERROR(r, "nmae", "unknown_field", "did you mean 'name'?");
  r = parse_workflow("name: 'bad name!'\nnodes: {}\nmax_concurrency: 0\n");
  EXPECT_ERROR(r, "name", "bad_value", "must be 1 to 128");
  EXPECT_ERROR(r, "nodes", "bad_value", "at least one node");
  EXPECT_ERROR(r, "max_concurrency", "out_of_range", "1 to 100000");
  r = parse_workflow("name: x\nnodes: [a]\nversion: [1]\n");
  EXPECT_ERROR(r, "nodes", "type", "expected a mapping from node id");
  EXPECT_ERROR(r, "version", "type", "a string or number");
}

TEST(WorkflowSpec, RefusesTyposOfNodeFieldsOnEveryKind) {
  // noop takes any parameter, so these typos used to pass validation and
  // the node then ran without waiting for `a`, or without retries.
  auto r = parse_workflow(R"(name: typos
nodes:
  a: {kind: noop}
  b: {kind: noop, afer: [a]}
  c: {kind: noop, retires: 3}
  d: {kind: noop, tiemout: 5s, schedule_to_clsoe: 1m}
  e: {kind: noop, circuit_braker: {key: k}, concurency: {key: k, limit: 1}}
  f: {kind: noop, fallbak: a, compensat: a, triger: all_done}
  g: {kind: exec, command: [/bin/true], retries: 2}
  h: {kind: map, items: [1], node: {kind: noop, aftr: [a]}}
)");
  ASSERT_FALSE(r.ok());
  EXPECT_ERROR(r, "nodes.b.afer", "unknown_field", "did you mean 'after'?");
  EXPECT_ERROR(r, "nodes.c.retires", "unknown_field", "did you mean 'retry'?");
  EXPECT_ERROR(r, "nodes.d.tiemout", "unknown_field",
               "did you mean 'timeout'?");
  EXPECT_ERROR(r, "nodes.d.schedule_to_clsoe", "unknown_field",
               "did you mean 'schedule_to_close'?");
  EXPECT_ERROR(r, "nodes.e.circuit_braker", "unknown_field",
               "did you mean 'circuit_breaker'?");
  EXPECT_ERROR(r, "nodes.e.concurency", "unknown_field",
               "did you mean 'concurrency'?");
  EXPECT_ERROR(r, "nodes.f.fallbak", "unknown_field",
               "did you mean 'fallback'?");
  EXPECT_ERROR(r, "nodes.f.compensat", "unknown_field",
               "did you mean 'compensate'?");
  EXPECT_ERROR(r, "nodes.f.triger", "unknown_field", "did you mean 'trigger'?");
  EXPECT_ERROR(r, "nodes.g.retries", "unknown_field", "did you mean 'retry'?");
  EXPECT_ERROR(r, "nodes.h.node.aftr", "unknown_field",
               "did you mean 'after'?");
  EXPECT_EQ(r.errors.size(), 11u) << dump(r.errors);
  // Names that merely share letters with a node field stay parameters.
  auto ok = parse_workflow(R"(name: fine
nodes:
  a: {kind: noop, id: 1, v: 2, w: 3, s: x, message: hi, status: ok, tag: t}
)");
  EXPECT_TRUE(ok.ok()) << dump(ok.errors);
}

TEST(WorkflowSpec, ReportsEveryErrorAtOnceWithPathsAndLines) {
  auto r = parse_workflow(R"(name: multi
nodes:
  a:
    kind: nope
  b:
    kind: sleep
    duration: 5x
    after: [a, ghost]
  c:
    kind: exec
    comand: ["/bin/true"]
    retry:
      max_attempts: 0
      initial_backoff: 10s
      max_backoff: 1s
      multiplier: 0.5
      jitter: partial
      bogus: 1
)");
  ASSERT_FALSE(r.ok());
  EXPECT_ERROR(r, "nodes.a.kind", "unknown_kind", "unknown node kind 'nope'");
  EXPECT_ERROR(r, "nodes.b.duration", "bad_duration", "unknown unit 'x'");
  EXPECT_ERROR(r, "nodes.b.after[1]", "unknown_reference",
               "unknown node 'ghost'");
  EXPECT_ERROR(r, "nodes.c.comand", "unknown_field", "did you mean 'command'?");
  EXPECT_ERROR(r, "nodes.c", "missing_field", "needs 'command'");
  EXPECT_ERROR(r, "nodes.c.retry.max_attempts", "out_of_range", "1 to 10000");
  EXPECT_ERROR(r, "nodes.c.retry.max_backoff", "out_of_range",
               "shorter than initial_backoff");
  EXPECT_ERROR(r, "nodes.c.retry.multiplier", "out_of_range", "1 to 100");
  EXPECT_ERROR(r, "nodes.c.retry.jitter", "bad_value", "none, full, equal");
  EXPECT_ERROR(r, "nodes.c.retry.bogus", "unknown_field", "in retry");
  // Lines point at the offending value, errors come in file order.
  auto* kind = find(r.errors, "nodes.a.kind", "unknown_kind");
  EXPECT_EQ(kind->line, 4);
  EXPECT_EQ(kind->column, 11);
  EXPECT_EQ(find(r.errors, "nodes.c.retry.max_backoff", "out_of_range")->line,
            15);
  for (size_t i = 1; i < r.errors.size(); ++i)
    EXPECT_LE(r.errors[i - 1].line, r.errors[i].line);
}

TEST(WorkflowSpec, NamesCycles) {
  auto r = parse_workflow(R"(name: cyc
nodes:
  a: {kind: noop, after: [c]}
  b: {kind: noop, after: [a]}
  c: {kind: noop, after: [b]}
  d: {kind: noop, after: [d]}
  e: {kind: noop}
)");
  ASSERT_FALSE(r.ok());
  auto text = dump(r.errors);
  EXPECT_NE(text.find("a -> b -> c -> a"), std::string::npos) << text;
  EXPECT_ERROR(r, "nodes.d.after[0]", "cycle", "runs after itself");
  size_t cycles = 0;
  for (auto& d : r.errors)
    cycles += d.code == "cycle";
  EXPECT_EQ(cycles, 2u) << text;
}

TEST(WorkflowSpec, ChecksTemplateReferences) {
  auto r = parse_workflow(R"(name: t
inputs:
  who: {type: string}
nodes:
  a: {kind: noop, v: "{{ inputs.whom }}"}
  b: {kind: noop, v: "{{ nodes.c.output.x }}"}
  c: {kind: noop, after: [a], v: "{{ nodes.a.output }}"}
  d: {kind: noop, v: "{{ nodes.zz.output }}", w: "{{ nodes.a.result }}"}
  e: {kind: noop, v: "{{ run.start }}", w: ["ok", "{{ node.name }}"]}
  f: {kind: noop, v: "{{ secrets.x }}", w: {deep: "{{ inputs.who "}}
outputs:
  x: "{{ node.id }}"
  y: "{{ nodes.c.output.v }}"
)");
  ASSERT_FALSE(r.ok());
  EXPECT_ERROR(r, "nodes.a.v", "unknown_reference",
               "no input 'whom' is declared; inputs: who");
  EXPECT_ERROR(r, "nodes.b.v", "unknown_reference",
               "node 'c' is not upstream of 'b'");
  EXPECT_ERROR(r, "nodes.d.v", "unknown_reference", "no node 'zz'");
  EXPECT_ERROR(r, "nodes.d.w", "unknown_reference", "nodes.<id>.output");
  EXPECT_ERROR(r, "nodes.e.v", "unknown_reference", "run has id and workflow");
  EXPECT_ERROR(r, "nodes.e.w[1]", "unknown_reference",
               "node has id and attempt");
  EXPECT_ERROR(r, "nodes.f.v", "unknown_reference", "unknown name 'secrets'");
  EXPECT_ERROR(r, "nodes.f.w.deep", "bad_template",
               "at character 1: '{{' is never closed");
  EXPECT_ERROR(r, "outputs.x", "unknown_reference", "only defined inside");
  EXPECT_EQ(find(r.errors, "nodes.c.v", "unknown_reference"), nullptr);
  EXPECT_EQ(find(r.errors, "outputs.y", "unknown_reference"), nullptr);
  // Transitive upstream counts.
  auto ok = parse_workflow(R"(name: t
nodes:
  a: {kind: noop}
  b: {kind: noop, after: [a]}
  c: {kind: noop, after: [b], v: "{{ nodes.a.output }}"}
)");
  EXPECT_TRUE(ok.ok()) << dump(ok.errors);
}

TEST(WorkflowSpec, ChecksInputs) {
  auto r = parse_workflow(R"(name: i
inputs:
  a: {type: strng}
  b: {type: integer, default: "x"}
  c: {type: string, required: true, default: "x"}
  d: {typ: string}
  1bad: {}
  e:
nodes:
  n: {kind: noop}
)");
  EXPECT_ERROR(r, "inputs.a.type", "bad_value", "did you mean 'string'?");
  EXPECT_ERROR(r, "inputs.b.default", "type", "not of the input's type");
  EXPECT_ERROR(r, "inputs.c.default", "conflict", "required and has a default");
  EXPECT_ERROR(r, "inputs.d.typ", "unknown_field", "did you mean 'type'?");
  EXPECT_ERROR(r, "inputs.1bad", "bad_value", "must start with a letter");
  EXPECT_EQ(r.errors.size(), 5u) << dump(r.errors);
}

TEST(WorkflowSpec, InputsWithoutADefaultAreRequired) {
  auto r = parse_workflow(R"(name: i
inputs:
  plain: {type: string}
  bare:
  given: {type: integer, default: 3}
  optional: {type: string, required: false}
  said: {required: true}
  optional_default: {default: x, required: false}
nodes:
  n: {kind: noop, v: "{{ inputs.optional }}"}
)");
  ASSERT_TRUE(r.ok()) << dump(r.errors);
  auto& in = r.workflow->inputs;
  auto required = [&](const std::string& name) {
    for (auto& i : in)
      if (i.name == name)
        return i.required;
    ADD_FAILURE() << "no input " << name;
    return false;
  };
  EXPECT_TRUE(required("plain"));
  EXPECT_TRUE(required("bare"));
  EXPECT_FALSE(required("given"));
  EXPECT_FALSE(required("optional"));
  EXPECT_TRUE(required("said"));
  EXPECT_FALSE(required("optional_default"));
  // A submission that leaves out a required input is refused, naming each.
  std::vector<std::string> errors;
  EXPECT_FALSE(bind_inputs(*r.workflow, {{"said", 1}}, errors));
  ASSERT_EQ(errors.size(), 2u);
  auto text = errors[0] + "\n" + errors[1];
  EXPECT_NE(text.find("missing required input 'plain' of type string"),
            std::string::npos)
    << text;
  EXPECT_NE(text.find("missing required input 'bare'"), std::string::npos)
    << text;
  // An optional input left out reads as null; defaults apply.
  errors.clear();
  auto bound = bind_inputs(
    *r.workflow, {{"plain", "p"}, {"bare", true}, {"said", 1}}, errors);
  ASSERT_TRUE(bound) << errors.at(0);
  EXPECT_EQ(*bound, (nlohmann::json{{"plain", "p"},
                                    {"bare", true},
                                    {"given", 3},
                                    {"optional", nullptr},
                                    {"said", 1},
                                    {"optional_default", "x"}}));
}

TEST(WorkflowSpec, ChecksKindParameters) {
  auto r = parse_workflow(R"(name: k
nodes:
  f1: {kind: fail}
  f2: {kind: fail, times: 1, probability: 0.5}
  f3: {kind: fail, probability: 1.5}
  f4: {kind: fail, times: 1, seed: 3}
  f5: {kind: fail, times: "two"}
  f6: {kind: fail, exception: true}
  f7: {kind: fail, exception: "yes", times: 1}
  e1: {kind: exec, command: []}
  e2: {kind: exec, command: "/bin/true"}
  e3: {kind: exec, command: ["/bin/true", 3], env: {A: 1}}
  s1: {kind: sleep}
  s2: {kind: sleep, duration: 10}
  s3: {kind: sleep, duration: "{{ inputs.d }}"}
  n1: {timeout: 0s, kind: noop}
inputs:
  d: {type: string}
)");
  EXPECT_ERROR(r, "nodes.f1", "missing_field", "exactly one of 'times'");
  EXPECT_ERROR(r, "nodes.f2", "missing_field", "exactly one of 'times'");
  EXPECT_ERROR(r, "nodes.f3.probability", "out_of_range", "0 to 1");
  EXPECT_ERROR(r, "nodes.f4.seed", "bad_value", "only applies with");
  EXPECT_ERROR(r, "nodes.f5.times", "type", "expected an integer");
  EXPECT_EQ(find(r.errors, "nodes.f6", "missing_field"), nullptr);
  EXPECT_ERROR(r, "nodes.f7.exception", "type", "expected true or false");
  EXPECT_ERROR(r, "nodes.e1.command", "bad_value", "empty list");
  EXPECT_ERROR(r, "nodes.e2.command", "type", "a list of strings");
  EXPECT_ERROR(r, "nodes.e3.command[1]", "type", "a string");
  EXPECT_ERROR(r, "nodes.e3.env.A", "type", "a string");
  EXPECT_ERROR(r, "nodes.s1", "missing_field", "needs 'duration'");
  EXPECT_ERROR(r, "nodes.s2.duration", "bad_duration",
               "has no unit; write e.g. \"10s\"");
  EXPECT_ERROR(r, "nodes.n1.timeout", "out_of_range", "longer than 0s");
  EXPECT_EQ(find(r.errors, "nodes.s3.duration", "bad_duration"), nullptr);
  EXPECT_EQ(r.errors.size(), 13u) << dump(r.errors);
}

TEST(KindRegistry, ExecStdinDocSaysWhatItGets) {
  // `troupe kinds` prints these docs: exec's stdin is {inputs, nodes}.
  auto* exec = kind_registry::global().find("exec");
  ASSERT_NE(exec, nullptr);
  auto stdin_param
    = std::find_if(exec->params.begin(), exec->params.end(),
                   [](const param_spec& p) { return p.name == "stdin"; });
  ASSERT_NE(stdin_param, exec->params.end());
  EXPECT_NE(stdin_param->doc.find("{inputs, nodes}"), std::string::npos)
    << stdin_param->doc;
  EXPECT_EQ(stdin_param->doc.find("the node's inputs"), std::string::npos)
    << stdin_param->doc;
}

TEST(WorkflowSpec, BadNodeIdsAndNodesThatAreNotMappings) {
  auto r = parse_workflow("name: x\nnodes:\n  a.b: {kind: noop}\n  c: 3\n"
                          "  d: {after: {x: 1}}\n");
  EXPECT_ERROR(r, "nodes.a.b", "bad_value", "node id 'a.b'");
  EXPECT_ERROR(r, "nodes.c", "type", "expected a node mapping");
  EXPECT_ERROR(r, "nodes.d", "missing_field", "has no 'kind'");
  EXPECT_ERROR(r, "nodes.d.after", "type", "a list of node ids");
}

TEST(WorkflowSpec, PluginKindsAreValidatedLikeBuiltIns) {
  kind_registry registry;
  register_builtin_kinds(registry);
  EXPECT_FALSE(registry.add({"noop", "", {}, true, nullptr}));
  ASSERT_TRUE(registry.add(
    {"greet",
     "A plugin kind.",
     {{"who", param_type::string, true, "Whom to greet."},
      {"loud", param_type::boolean, false, "Shout."},
      {"tone", param_type::choice, false, "How.", 0, 0, {"warm", "cold"}}},
     false,
     [](const nlohmann::json& node, kind_check_context& ctx) {
       if (node.value("who", "") == "nobody")
         ctx.error("who", "bad_value", "greet someone");
     }}));
  auto ok
    = parse_workflow("name: p\nnodes:\n  g: {kind: greet, who: x}\n", registry);
  EXPECT_TRUE(ok.ok()) << dump(ok.errors);
  auto r = parse_workflow("name: p\nnodes:\n  g: {kind: greet, loud: 1, "
                          "tone: warn, whom: x}\n  h: {kind: greet, who: "
                          "nobody}\n",
                          registry);
  EXPECT_ERROR(r, "nodes.g", "missing_field", "needs 'who'");
  EXPECT_ERROR(r, "nodes.g.loud", "type", "true or false");
  EXPECT_ERROR(r, "nodes.g.tone", "bad_value", "did you mean 'warm'?");
  EXPECT_ERROR(r, "nodes.g.whom", "unknown_field", "did you mean 'who'?");
  EXPECT_ERROR(r, "nodes.h.who", "bad_value", "greet someone");
  // The global registry does not know the plugin's kind.
  auto global = parse_workflow("name: p\nnodes:\n  g: {kind: greet}\n");
  EXPECT_ERROR(global, "nodes.g.kind", "unknown_kind", "kinds: exec, fail");
}

TEST(WorkflowSpec, LoadsFilesAndRefusesOthers) {
  troupe::test::temp_dir dir;
  auto good = dir.write("ok.yaml", "name: x\nnodes: {a: {kind: noop}}\n");
  EXPECT_TRUE(load_workflow_file(good).ok());
  EXPECT_EQ(load_workflow_file(dir.path() / "missing.yaml").errors.at(0).code,
            "unreadable");
  EXPECT_NE(load_workflow_file(dir.path()).errors.at(0).message.find("folder"),
            std::string::npos);
  auto big = dir.write("big.yaml", std::string(max_workflow_bytes + 10, ' '));
  auto r = load_workflow_file(big);
  EXPECT_EQ(r.errors.at(0).code, "too_large");
  EXPECT_NE(r.errors[0].message.find(std::to_string(max_workflow_bytes + 10)),
            std::string::npos);
}

TEST(WorkflowSpec, AcceptsTheLimitOfNodes) {
  std::string text = "name: many\nnodes:\n";
  for (size_t i = 0; i < max_workflow_nodes; ++i)
    text += "  n" + std::to_string(i) + ": {kind: noop}\n";
  EXPECT_TRUE(parse_workflow(text).ok());
  text += "  one_more: {kind: noop}\n";
  auto r = parse_workflow(text);
  EXPECT_ERROR(r, "nodes", "too_large", "the limit is 10000");
}

TEST(WorkflowSpec, ChecksTemplatesAlongAChainOfTheLimitOfNodes) {
  // Each node reads the one before it and the first: upstream is checked
  // for every reference without a set of upstream nodes per node (which
  // took gigabytes for this chain).
  std::string text = "name: chain\nnodes:\n  n0: {kind: noop, v: 1}\n";
  for (size_t i = 1; i + 1 < max_workflow_nodes; ++i)
    text += "  n" + std::to_string(i) + ": {kind: noop, after: [n"
            + std::to_string(i - 1) + "], v: \"{{ nodes.n"
            + std::to_string(i - 1)
            + ".output.v }}\", w: \"{{ nodes.n0.output }}\"}\n";
  auto ok = parse_workflow(text);
  ASSERT_TRUE(ok.ok()) << dump(ok.errors);
  // A reference to a node that is not upstream is still refused, however
  // far away.
  text += "  x: {kind: noop, after: [n5], v: \"{{ nodes.n9000.output }}\"}\n";
  auto r = parse_workflow(text);
  EXPECT_ERROR(r, "nodes.x.v", "unknown_reference",
               "node 'n9000' is not upstream of 'x'");
  EXPECT_EQ(r.errors.size(), 1u) << dump(r.errors);
  std::string small = "name: chain\nnodes:\n  n0: {kind: noop}\n";
  for (size_t i = 1; i < 300; ++i)
    small += "  n" + std::to_string(i) + ": {kind: noop, after: [n"
             + std::to_string(i - 1) + "]}\n";
  small += "  x: {kind: noop, after: [n5], v: \"{{ nodes.n200.output }}\", "
           "w: \"{{ nodes.n1.output }}\"}\n";
  r = parse_workflow(small);
  EXPECT_ERROR(r, "nodes.x.v", "unknown_reference",
               "node 'n200' is not upstream of 'x'");
  EXPECT_EQ(r.errors.size(), 1u) << dump(r.errors);
}

TEST(WorkflowSpec, AnchorsAliasesAndMergeKeys) {
  auto r = parse_workflow(R"(name: m
defaults:
  retry: &base {max_attempts: 5, initial_backoff: 1s, max_backoff: 8s}
nodes:
  a:
    kind: fail
    times: 1
    retry:
      <<: *base
      max_attempts: 2
  b: &b {kind: noop, after: [a], tag: x}
  c:
    <<: *b
    tag: y
)");
  ASSERT_TRUE(r.ok()) << dump(r.errors);
  auto* a = r.workflow->find_node("a");
  EXPECT_EQ(a->retry.max_attempts, 2);
  EXPECT_EQ(a->retry.max_backoff, 8s);
  auto* c = r.workflow->find_node("c");
  EXPECT_EQ(c->kind, "noop");
  EXPECT_EQ(c->after, std::vector<std::string>{"a"});
  EXPECT_EQ(c->params["tag"], "y");
  auto bad = parse_workflow("name: m\nnodes:\n  a: {<<: 3, kind: noop}\n");
  EXPECT_EQ(bad.errors.at(0).code, "syntax") << dump(bad.errors);
  auto unknown = parse_workflow("name: m\nnodes:\n  a: *nope\n");
  EXPECT_NE(unknown.errors.at(0).message.find("nope"), std::string::npos)
    << dump(unknown.errors);
}

TEST(WorkflowSpec, TopLevelXKeysHoldAnchors) {
  auto r = parse_workflow(R"(name: x
x-retry: &retry {max_attempts: 7, initial_backoff: 10ms}
x-notes: anything at all
nodes:
  a: {kind: noop, retry: *retry}
  b:
    kind: noop
    retry: {<<: *retry, max_attempts: 2}
)");
  ASSERT_TRUE(r.ok()) << dump(r.errors);
  EXPECT_EQ(r.workflow->find_node("a")->retry.max_attempts, 7);
  EXPECT_EQ(r.workflow->find_node("b")->retry.max_attempts, 2);
  EXPECT_EQ(r.workflow->find_node("b")->retry.initial_backoff, 10ms);
  // Only at the top level, and only with the prefix.
  auto bad = parse_workflow(R"(name: x
y-base: 1
x-: 2
nodes:
  a: {kind: sleep, duration: 1s, x-note: 3}
)");
  EXPECT_ERROR(bad, "y-base", "unknown_field",
               "or any name starting with 'x-'");
  EXPECT_ERROR(bad, "x-", "unknown_field", "");
  EXPECT_ERROR(bad, "nodes.a.x-note", "unknown_field", "");
  EXPECT_EQ(bad.errors.size(), 3u) << dump(bad.errors);
}

TEST(WorkflowSpec, MalformedFlowCollectionsFailFast) {
  // Found by fuzzing: a parser once looped on this, allocating without end.
  auto r = parse_workflow("{\n  \"name\": \"f\",\n  \"description\": \"x\" },\n"
                          "    \"b\": { \"kind\": \"sleep\" },\n");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.errors.at(0).code, "syntax");
  EXPECT_EQ(r.errors[0].line, 3);
}

TEST(WorkflowSpec, ChecksFallbacks) {
  auto r = parse_workflow(R"(name: f
nodes:
  a: {kind: noop, fallback: a}
  b: {kind: noop, fallback: nope}
  c: {kind: noop, fallback: d}
  d: {kind: noop, fallback: e}
  e: {kind: noop, fallback: c}
  f: {kind: noop, fallback: g}
  g: {kind: noop, after: [h]}
  h: {kind: noop}
  i: {kind: noop, after: [g]}
  j: {kind: noop, fallback: g}
  k: {kind: noop, fallback: 3}
)");
  EXPECT_ERROR(r, "nodes.a.fallback", "cycle", "its own fallback");
  EXPECT_ERROR(r, "nodes.b.fallback", "unknown_reference",
               "falls back to unknown node 'nope'");
  EXPECT_ERROR(r, "nodes.c.fallback", "cycle",
               "fallback cycle: c -> d -> e -> c");
  EXPECT_ERROR(r, "nodes.g.after[0]", "bad_reference",
               "'h', which is not upstream of 'f'");
  EXPECT_ERROR(r, "nodes.i.after[0]", "bad_reference",
               "runs only as the fallback of 'f'; run after 'f' instead");
  EXPECT_ERROR(r, "nodes.j.fallback", "conflict",
               "already the fallback of 'f'");
  EXPECT_ERROR(r, "nodes.k.fallback", "type", "a node id");
  EXPECT_EQ(r.errors.size(), 7u) << dump(r.errors);
  auto ok = parse_workflow(R"(name: f
nodes:
  up: {kind: noop}
  a: {kind: noop, after: [up], fallback: b}
  b: {kind: noop, after: [up], x: "{{ nodes.up.output }}"}
)");
  EXPECT_TRUE(ok.ok()) << dump(ok.errors);
  EXPECT_EQ(ok.workflow->primary_of("b")->id, "a");
  EXPECT_EQ(ok.workflow->primary_of("a"), nullptr);
}

TEST(WorkflowSpec, ChecksTimeouts) {
  auto r = parse_workflow(R"(name: t
timeout: 0s
nodes:
  a: {kind: noop, schedule_to_close: 5}
  b: {kind: noop, schedule_to_close: 0ms}
  c: {kind: noop, schedule_to_close: 90s, timeout: 10s}
)");
  EXPECT_ERROR(r, "timeout", "out_of_range", "timeout must be longer than 0s");
  EXPECT_ERROR(r, "nodes.a.schedule_to_close", "bad_duration", "has no unit");
  EXPECT_ERROR(r, "nodes.b.schedule_to_close", "out_of_range",
               "schedule_to_close must be longer than 0s");
  EXPECT_EQ(r.errors.size(), 3u) << dump(r.errors);
  auto ok = parse_workflow("name: t\ntimeout: 1h\nnodes:\n  c: {kind: noop, "
                           "schedule_to_close: 90s}\n");
  ASSERT_TRUE(ok.ok()) << dump(ok.errors);
  EXPECT_EQ(ok.workflow->timeout, std::chrono::hours{1});
  EXPECT_EQ(ok.workflow->nodes[0].schedule_to_close, std::chrono::seconds{90});
}

TEST(WorkflowSpec, RefusesZeroDurationsWhereZeroMakesNoSense) {
  auto r = parse_workflow(R"(name: z
nodes:
  e: {kind: exec, command: [/bin/true], heartbeat_timeout: 0s}
  h: {kind: http, url: "http://localhost/", request_timeout: 0ms}
  t: {kind: exec, command: [/bin/true], heartbeat_timeout: "{{ run.id }}"}
  s: {kind: sleep, duration: 0s}
)");
  EXPECT_ERROR(r, "nodes.e.heartbeat_timeout", "out_of_range",
               "'heartbeat_timeout' \"0s\" is out of range; allowed: at "
               "least 1ms");
  EXPECT_ERROR(r, "nodes.h.request_timeout", "out_of_range", "at least 1ms");
  EXPECT_EQ(r.errors.size(), 2u) << dump(r.errors);
  auto ok = parse_workflow("name: z\nnodes:\n  e: {kind: exec, command: "
                           "[/bin/true], heartbeat_timeout: 1ms}\n");
  EXPECT_TRUE(ok.ok()) << dump(ok.errors);
}

TEST(WorkflowSpec, ChecksSwitchesAndTriggers) {
  auto r = parse_workflow(R"(name: s
inputs: {n: {type: integer}}
nodes:
  s1:
    kind: switch
    cases:
      - {when: "inputs.n > ", goto: [a]}
      - {when: "inputs.m == 1", goto: [nope]}
      - {when: "nodes.a.output == 1", goto: s1}
      - {goto: [a]}
      - {when: true, goto: [a], extra: 1}
    default: [b]
  s2: {kind: switch, cases: []}
  a: {kind: noop}
  b: {kind: noop, trigger: any_success}
  c: {kind: noop, after: [a, b], trigger: 3}
)");
  EXPECT_ERROR(r, "nodes.s1.cases[0].when", "bad_expression",
               "bad expression at character 12: expected an operand");
  EXPECT_ERROR(r, "nodes.s1.cases[1].when", "unknown_reference",
               "no input 'm' is declared");
  EXPECT_ERROR(r, "nodes.s1.cases[1].goto[0]", "unknown_reference",
               "sends the run to unknown node 'nope'");
  EXPECT_ERROR(r, "nodes.s1.cases[2].goto[0]", "cycle",
               "switch 's1' sends the run to itself");
  EXPECT_ERROR(r, "nodes.s1.cases[2].when", "unknown_reference",
               "node 'a' is not upstream of 's1'");
  EXPECT_ERROR(r, "nodes.s1.cases[3]", "missing_field",
               "needs 'when' and 'goto'");
  EXPECT_ERROR(r, "nodes.s1.cases[4].extra", "unknown_field", "");
  EXPECT_ERROR(r, "nodes.s1.cases[4].when", "type", "an expression string");
  EXPECT_ERROR(r, "nodes.s2.cases", "type", "a non-empty list");
  EXPECT_ERROR(r, "nodes.b.trigger", "bad_value",
               "unknown trigger 'any_success'; allowed: all_success, "
               "all_done, one_success");
  EXPECT_ERROR(r, "nodes.c.trigger", "type", "one of all_success");
  auto ok = parse_workflow(R"(name: s
nodes:
  check: {kind: noop, total: 3}
  route:
    kind: switch
    after: [check]
    cases: [{when: "nodes.check.output.total > 2", goto: [big]}]
    default: small
  big: {kind: noop}
  small: {kind: noop}
  join: {kind: noop, after: [big, small], trigger: one_success}
)");
  ASSERT_TRUE(ok.ok()) << dump(ok.errors);
  // Targets run after their switch without saying so.
  EXPECT_EQ(ok.workflow->find_node("big")->after,
            std::vector<std::string>{"route"});
  EXPECT_EQ(ok.workflow->find_node("small")->after,
            std::vector<std::string>{"route"});
  EXPECT_EQ(ok.workflow->find_node("join")->trigger, trigger_rule::one_success);
}

TEST(WorkflowSpec, ASwitchSendingTheRunUpstreamIsReportedAtItsGoto) {
  auto r = parse_workflow(R"(name: s
nodes:
  a: {kind: noop}
  b: {kind: noop, after: [a]}
  s:
    kind: switch
    after: [b]
    cases: [{when: "true", goto: [a]}]
    default: [b, c]
  c: {kind: noop}
)");
  ASSERT_FALSE(r.ok());
  EXPECT_ERROR(r, "nodes.s.cases[0].goto[0]", "cycle",
               "switch 's' sends the run to 'a', which it runs after");
  EXPECT_ERROR(r, "nodes.s.default[0]", "cycle",
               "switch 's' sends the run to 'b', which it runs after");
  // Not a cycle of `after`s at a field the nodes do not have.
  EXPECT_EQ(find(r.errors, "nodes.a.after", "cycle"), nullptr)
    << dump(r.errors);
  EXPECT_EQ(r.errors.size(), 2u) << dump(r.errors);
  EXPECT_EQ(r.errors[0].line, 8);
}

TEST(WorkflowSpec, ChecksCompensations) {
  auto r = parse_workflow(R"(name: c
nodes:
  a: {kind: noop, compensate: a}
  b: {kind: noop, compensate: nope}
  c: {kind: noop, compensate: u}
  d: {kind: noop, compensate: u}
  e: {kind: noop, compensate: f, fallback: f}
  f: {kind: noop}
  g: {kind: noop, after: [u]}
  h: {kind: noop, compensate: v}
  v: {kind: noop, after: [g]}
  u: {kind: noop}
  w: {kind: noop, compensate: x}
  x: {kind: noop, retry: {max_attempts: 2}, fallback: f2}
  f2: {kind: noop}
)");
  EXPECT_ERROR(r, "nodes.a.compensate", "cycle", "compensates itself");
  EXPECT_ERROR(r, "nodes.b.compensate", "unknown_reference",
               "compensated by unknown node 'nope'");
  EXPECT_ERROR(r, "nodes.d.compensate", "conflict", "already compensates 'c'");
  EXPECT_ERROR(r, "nodes.e.compensate", "conflict", "is the fallback of 'e'");
  EXPECT_ERROR(r, "nodes.g.after[0]", "bad_reference",
               "runs only to compensate 'c'");
  EXPECT_ERROR(r, "nodes.v.after[0]", "bad_reference",
               "neither 'h' nor upstream of it");
  EXPECT_ERROR(r, "nodes.w.compensate", "conflict",
               "has a compensation or fallback of its own");
  EXPECT_EQ(r.errors.size(), 7u) << dump(r.errors);
}

TEST(WorkflowSpec, ChecksCircuitBreakers) {
  auto r = parse_workflow(R"(name: cb
nodes:
  a: {kind: noop, circuit_breaker: {failure_threshold: 0, key: k}}
  b: {kind: noop, circuit_breaker: {window: 10s}}
  c: {kind: noop, circuit_breaker: {key: k, error_rate: 1.5, reset: 1s}}
  d: {kind: noop, circuit_breaker: {key: k, reset_timeout: 0s, min_calls: -1}}
  e: {kind: noop, circuit_breaker: on}
)");
  EXPECT_ERROR(r, "nodes.a.circuit_breaker.failure_threshold", "out_of_range",
               "failure_threshold 0 is out of range; allowed: 1 to 1000000");
  EXPECT_ERROR(r, "nodes.b.circuit_breaker", "missing_field", "needs a 'key'");
  EXPECT_ERROR(r, "nodes.c.circuit_breaker.error_rate", "out_of_range",
               "more than 0, at most 1");
  EXPECT_ERROR(r, "nodes.c.circuit_breaker.reset", "unknown_field",
               "allowed: key, failure_threshold");
  EXPECT_ERROR(r, "nodes.d.circuit_breaker.reset_timeout", "out_of_range",
               "longer than 0s");
  EXPECT_ERROR(r, "nodes.d.circuit_breaker.min_calls", "out_of_range", "");
  EXPECT_ERROR(r, "nodes.e.circuit_breaker", "type",
               "a circuit breaker mapping");
  auto ok = parse_workflow(R"(name: cb
nodes:
  a: {kind: noop, circuit_breaker: {key: pay, failure_threshold: 3,
      error_rate: 0.5, min_calls: 4, window: 30s, reset_timeout: 5s,
      half_open_max_calls: 2}}
)");
  ASSERT_TRUE(ok.ok()) << dump(ok.errors);
  auto& b = *ok.workflow->nodes[0].circuit_breaker;
  EXPECT_EQ(b.key, "pay");
  EXPECT_EQ(b.failure_threshold, 3);
  EXPECT_EQ(b.error_rate, 0.5);
  EXPECT_EQ(b.reset_timeout, std::chrono::seconds{5});
  EXPECT_EQ(b.half_open_max_calls, 2);
}

TEST(WorkflowSpec, ChecksConcurrencyLimits) {
  auto r = parse_workflow(R"(name: c
inputs: {customer: {type: string}}
nodes:
  a: {kind: noop, concurrency: {key: "{{ inputs.customr }}", limit: 2}}
  b: {kind: noop, concurrency: {key: k, limit: 0}}
  c: {kind: noop, concurrency: {limit: 1}}
  d: {kind: noop, concurrency: 3}
)");
  EXPECT_ERROR(r, "nodes.a.concurrency.key", "unknown_reference",
               "did you mean 'customer'?");
  EXPECT_ERROR(r, "nodes.b.concurrency.limit", "out_of_range",
               "limit 0 is out of range; allowed: 1 to 100000");
  EXPECT_ERROR(r, "nodes.c.concurrency", "missing_field", "needs a 'key'");
  EXPECT_ERROR(r, "nodes.d.concurrency", "type", "a mapping {key, limit}");
  EXPECT_EQ(r.errors.size(), 4u) << dump(r.errors);
}

TEST(WorkflowSpec, ChecksMaps) {
  auto r = parse_workflow(R"(name: m
nodes:
  list: {kind: noop, ids: [1, 2]}
  a: {kind: map, after: [list], items: 5, node: {kind: noop}}
  b:
    kind: map
    after: [list]
    items: "{{ nodes.list.output.ids }}"
    node: {kind: exec, command: ["echo", "{{ item.x }}", "{{ itm }}"], after: [list]}
  c: {kind: map, items: [1], node: {kind: map, items: [], node: {kind: noop}}}
  d: {kind: map, items: [1]}
  e: {kind: noop, v: "{{ item }}"}
  f: {kind: map, items: [1], node: {kind: sleep}}
)");
  EXPECT_ERROR(r, "nodes.a.items", "type", "expected a list, or a template");
  EXPECT_ERROR(r, "nodes.b.node.after", "bad_value",
               "'after' belongs on the map node 'b'");
  EXPECT_ERROR(r, "nodes.b.node.command[2]", "unknown_reference",
               "unknown name 'itm'");
  EXPECT_ERROR(r, "nodes.c.node.kind", "bad_value", "kind 'map' cannot be");
  EXPECT_ERROR(r, "nodes.d", "missing_field", "node");
  EXPECT_ERROR(r, "nodes.e.v", "unknown_reference",
               "'item' is only defined inside a map's node");
  EXPECT_ERROR(r, "nodes.f.node", "missing_field", "needs 'duration'");
  auto ok = parse_workflow(R"(name: m
nodes:
  list: {kind: noop, ids: [1, 2]}
  each:
    kind: map
    after: [list]
    items: "{{ nodes.list.output.ids }}"
    max_concurrency: 3
    node: {kind: noop, v: "{{ item }}", i: "{{ item_index }}",
           from: "{{ nodes.list.output.ids }}", retry: {max_attempts: 2}}
)");
  ASSERT_TRUE(ok.ok()) << dump(ok.errors);
  auto& m = *ok.workflow->find_node("each");
  EXPECT_EQ(m.map_concurrency, 3);
  ASSERT_TRUE(m.map_node);
  EXPECT_EQ(m.map_node->retry.max_attempts, 2);
}
