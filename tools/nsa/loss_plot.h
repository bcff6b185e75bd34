// Loss curves: reading the loss.csv files written by `nsa train` and drawing them.
#pragma once

#include <string>
#include <vector>

namespace nsa::cli {

struct LossCurve {
  std::string label;
  std::vector<double> step, train;       // every text step
  std::vector<double> val_step, val;     // the steps with a validation loss
  std::vector<double> needle_step, needle;  // passkey steps: loss on the answer digits
  std::vector<double> recall_step, recall;  // recall steps (passkey, mqar): answer accuracy
};

// Reads a loss.csv (header step,train_loss,val_loss,...). Throws nsa::Error naming the file
// and line on a malformed row.
LossCurve read_loss_csv(const std::string& path, const std::string& label);

// One chart: each curve's training loss (smoothed over 10 steps, thin) and validation loss
// (markers), loss in nats per byte against the step.
void write_loss_plot(const std::vector<LossCurve>& curves, const std::string& png_path, const std::string& title);
// Each curve's passkey loss (mean of 10 passkey steps) against the step.
void write_passkey_loss_plot(const std::vector<LossCurve>& curves, const std::string& png_path,
                             const std::string& title);
// Each curve's answer accuracy on recall steps (mean of 10 such steps) against the step.
void write_recall_plot(const std::vector<LossCurve>& curves, const std::string& png_path, const std::string& title);
// The single run of one loss.csv.
void write_loss_plot(const std::string& csv_path, const std::string& png_path, const std::string& title);

}  // namespace nsa::cli
