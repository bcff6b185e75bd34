// Loss curves (loss_plot.h) and `nsa plot-loss`, which draws several runs in one chart.
#include "loss_plot.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <memory>
#include <sstream>

#include "commands.h"
#include "nsa/error.h"
#include "plot/line_chart.h"
#include "plot/png.h"

namespace nsa::cli {

LossCurve read_loss_csv(const std::string& path, const std::string& label) {
  std::ifstream in(path);
  if (!in) throw Error("cannot read the loss file " + path);
  LossCurve curve;
  curve.label = label;
  std::string line;
  std::getline(in, line);
  if (line.rfind("step,train_loss,val_loss", 0) != 0)
    throw Error(path + ": not a loss.csv of nsa train (header '" + line + "')");
  int number = 1;
  while (std::getline(in, line)) {
    ++number;
    if (line.empty()) continue;
    std::vector<std::string> fields;
    std::stringstream ss(line);
    std::string field;
    while (std::getline(ss, field, ',')) fields.push_back(field);
    try {
      if (fields.size() < 3) throw std::invalid_argument("fields");
      const double step = std::stod(fields[0]);
      if (!fields[1].empty()) {  // empty on passkey steps
        curve.step.push_back(step);
        curve.train.push_back(std::stod(fields[1]));
      }
      if (fields.size() >= 8 && !fields[7].empty()) {
        curve.needle_step.push_back(step);
        curve.needle.push_back(std::stod(fields[7]));
      }
      if (fields.size() >= 10 && !fields[9].empty()) {  // recall_accuracy (later files)
        curve.recall_step.push_back(step);
        curve.recall.push_back(std::stod(fields[9]));
      }
      if (!fields[2].empty()) {
        curve.val_step.push_back(step);
        curve.val.push_back(std::stod(fields[2]));
      }
    } catch (const std::exception&) {
      throw Error(path + ":" + std::to_string(number) + ": malformed row '" + line + "'");
    }
  }
  return curve;
}

namespace {

// A trailing mean over `window` points: one batch's loss is noisy.
plot::Series trailing_mean(const std::vector<double>& x, const std::vector<double>& y, std::size_t window) {
  plot::Series s;
  double sum = 0;
  for (std::size_t k = 0; k < y.size(); ++k) {
    sum += y[k];
    if (k >= window) sum -= y[k - window];
    s.x.push_back(x[k]);
    s.y.push_back(sum / static_cast<double>(std::min(k + 1, window)));
  }
  return s;
}

// One series per curve: the mean of 10 points of (curve.*x, curve.*y), a step chart.
void write_step_mean_plot(const std::vector<LossCurve>& curves, const std::string& png_path, plot::LineChart chart,
                          std::vector<double> LossCurve::*x, std::vector<double> LossCurve::*y) {
  chart.x_label = "step";
  chart.y_include_zero = true;
  for (std::size_t i = 0; i < curves.size(); ++i) {
    plot::Series s = trailing_mean(curves[i].*x, curves[i].*y, 10);
    s.name = curves[i].label;
    s.color = plot::palette(static_cast<int>(i));
    chart.series.push_back(std::move(s));
  }
  plot::write_png(png_path, plot::render_line_chart(chart));
}

}  // namespace

void write_passkey_loss_plot(const std::vector<LossCurve>& curves, const std::string& png_path,
                             const std::string& title) {
  plot::LineChart chart;
  chart.title = title;
  chart.subtitle = "loss on the passkey's digits (mean of 10 passkey steps); chance = ln 10 = 2.30";
  chart.y_label = "passkey loss (nats per digit)";
  chart.rules.push_back({std::log(10.0), "chance"});
  write_step_mean_plot(curves, png_path, chart, &LossCurve::needle_step, &LossCurve::needle);
}

void write_recall_plot(const std::vector<LossCurve>& curves, const std::string& png_path, const std::string& title) {
  plot::LineChart chart;
  chart.title = title;
  chart.subtitle = "answers right on recall steps (mean of 10 steps)";
  chart.y_label = "answer accuracy";
  write_step_mean_plot(curves, png_path, chart, &LossCurve::recall_step, &LossCurve::recall);
}

void write_loss_plot(const std::vector<LossCurve>& curves, const std::string& png_path, const std::string& title) {
  plot::LineChart chart;
  chart.title = title;
  chart.subtitle = "thin: training loss on text (mean of 10 steps); markers: validation loss";
  chart.x_label = "step";
  chart.y_label = "loss (nats per byte)";
  for (std::size_t i = 0; i < curves.size(); ++i) {
    const LossCurve& c = curves[i];
    plot::Series train = trailing_mean(c.step, c.train, 10);
    train.color = plot::palette(static_cast<int>(i));
    train.line_width = 1.5;
    plot::Series val;
    val.name = c.label;
    val.color = train.color;
    val.x = c.val_step;
    val.y = c.val;
    val.marker = plot::Marker::kCircle;
    chart.series.push_back(std::move(train));
    chart.series.push_back(std::move(val));
  }
  plot::write_png(png_path, plot::render_line_chart(chart));
}

void write_loss_plot(const std::string& csv_path, const std::string& png_path, const std::string& title) {
  write_loss_plot({read_loss_csv(csv_path, "validation")}, png_path, title);
}

Command add_plot_loss_command(CLI::App& app) {
  struct Options {
    std::vector<std::string> runs;
    std::string out, title = "training runs";
    bool passkey = false, recall = false;
  };
  auto o = std::make_shared<Options>();
  CLI::App* sub = app.add_subcommand("plot-loss", "Loss curves of several nsa train runs in one PNG");
  sub->add_option("runs", o->runs, "LABEL=path/to/loss.csv, one per run")->required();
  sub->add_option("--out", o->out, "the PNG to write")->required();
  sub->add_option("--title", o->title, "chart title")->capture_default_str();
  sub->add_flag("--passkey", o->passkey, "plot the loss of the passkey steps instead of the text loss");
  sub->add_flag("--recall", o->recall, "plot the answer accuracy of the recall (passkey, mqar) steps");
  return {sub, [o] {
            std::vector<LossCurve> curves;
            for (const std::string& run : o->runs) {
              const auto eq = run.find('=');
              if (eq == std::string::npos || eq == 0)
                throw Error("plot-loss: expected LABEL=path/to/loss.csv, got '" + run + "'");
              curves.push_back(read_loss_csv(run.substr(eq + 1), run.substr(0, eq)));
            }
            if (o->passkey && o->recall) throw Error("plot-loss: give --passkey or --recall, not both");
            if (o->passkey)
              write_passkey_loss_plot(curves, o->out, o->title);
            else if (o->recall)
              write_recall_plot(curves, o->out, o->title);
            else
              write_loss_plot(curves, o->out, o->title);
            return 0;
          }};
}

}  // namespace nsa::cli
