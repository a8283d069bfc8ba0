"""What the program tests share: run a program's main as the command line does, and check an
input error is one line with exit status 2."""
from trilevelnas.cli import run_main


def run(module, argv, capsys):
    """``(exit status, stdout, stderr)`` of ``module.main(argv)`` run through ``run_main`` under
    the name ``python -m trilevelnas.PROG`` gives it."""
    code = run_main("trilevelnas." + module.__name__.rsplit(".", 1)[-1], module.main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, *words):
    """Exit status 2, one stderr line without a traceback, naming every one of ``words``."""
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for w in words:
        assert str(w) in err, (w, err)
