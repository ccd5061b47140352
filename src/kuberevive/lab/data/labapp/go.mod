module kuberevive.invalid/labapp

go 1.24
