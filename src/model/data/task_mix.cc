#include "model/data/task_mix.h"

#include <cmath>
#include <sstream>

#include "model/training/key_value.h"
#include "nsa/error.h"

namespace nsa::model {

const char* task_name(Task task) {
  switch (task) {
    case Task::text: return "text";
    case Task::needle: return "needle";
    case Task::mqar: return "mqar";
  }
  return "?";
}

bool is_recall(Task task) { return task != Task::text; }

TaskMix TaskMix::parse(const std::string& spec) {
  const std::string what = "task mix '" + spec + "': ";
  TaskMix mix;
  double total = 0;
  std::stringstream parts(spec);
  std::string part;
  while (std::getline(parts, part, ',')) {
    const auto colon = part.find(':');
    const std::string name = part.substr(0, colon);
    Task task;
    if (name == "text") task = Task::text;
    else if (name == "needle") task = Task::needle;
    else if (name == "mqar") task = Task::mqar;
    else throw Error(what + "unknown task '" + name + "' (text, needle or mqar)");
    double weight = 1;
    if (colon != std::string::npos) {
      const std::string value = part.substr(colon + 1);
      std::size_t used = 0;
      try {
        weight = std::stod(value, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used == 0 || used != value.size() || !std::isfinite(weight) || weight < 0)
        throw Error(what + "the weight of " + name + " ('" + value + "') is not a number >= 0");
    }
    for (const Part& p : mix.parts_)
      if (p.task == task) throw Error(what + "task " + name + " is given twice");
    mix.parts_.push_back({task, weight});
    total += weight;
  }
  if (mix.parts_.empty()) throw Error(what + "names no task");
  if (!(total > 0)) throw Error(what + "the weights sum to 0");
  for (Part& p : mix.parts_) p.weight /= total;
  return mix;
}

std::string TaskMix::spec() const {
  std::string s;
  for (const Part& p : parts_) {
    if (!s.empty()) s.push_back(',');
    s.append(task_name(p.task)).append(":").append(format_double(p.weight));
  }
  return s;
}

Task TaskMix::draw(double u) const {
  double cumulative = 0;
  for (const Part& p : parts_) {
    cumulative += p.weight;
    if (p.weight > 0 && u < cumulative) return p.task;
  }
  for (auto it = parts_.rbegin(); it != parts_.rend(); ++it)  // u at the rounding edge
    if (it->weight > 0) return it->task;
  throw Error("task mix: no task");  // unreachable: parse refuses a zero total
}

bool TaskMix::mixed() const {
  int n = 0;
  for (const Part& p : parts_) n += p.weight > 0 ? 1 : 0;
  return n > 1;
}

double TaskMix::weight(Task task) const {
  for (const Part& p : parts_)
    if (p.task == task) return p.weight;
  return 0;
}

}  // namespace nsa::model
