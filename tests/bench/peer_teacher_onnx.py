#!/usr/bin/python3
"""Export the PyTorch peer's e2e teacher to ONNX, so that libdistill's students
can learn from the very teacher the peer's students learn from.

usage: peer_teacher_onnx.py PEER_SCRIPT TEACHER_PT OUT_ONNX
  PEER_SCRIPT  the peer (torch_kd.py), whose resnet20() defines the network
  TEACHER_PT   the state dict its e2e_teacher case saved (peer_teacher_resnet20.pt)
  OUT_ONNX     the file to write (opset 13, any batch size)

Then `distill export --model OUT_ONNX --out $OUT_DIR/distill_teacher_resnet20.dstl`
puts it where `distill-bench e2e_student_kd` reads its teacher (see the README,
End-to-end accuracy). In eval mode the exporter folds each BatchNorm into its
convolution; the network computes the same function.
"""
import importlib.util
import sys

import torch


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    spec = importlib.util.spec_from_file_location("peer", sys.argv[1])
    peer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peer)
    model = peer.resnet20()
    model.load_state_dict(torch.load(sys.argv[2]))
    model.eval()
    torch.onnx.export(model, torch.zeros(1, 1, 28, 28), sys.argv[3], opset_version=13,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})


if __name__ == "__main__":
    main()
